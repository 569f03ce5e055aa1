"""CDK constructs of the imaging archive (one capability per module) and the stack that wires them."""
