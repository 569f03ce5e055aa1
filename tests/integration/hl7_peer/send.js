// Sends HL7 files over one MLLP connection with simple-hl7's TCP client, one after the other,
// and prints each ACK as a JSON string on its own line.
//   node send.js HOST PORT FILE...
'use strict';
const fs = require('fs');
const hl7 = require('simple-hl7');

const [host, port, ...files] = process.argv.slice(2);
const client = hl7.Server.createTcpClient({ host, port: Number(port), keepalive: true });

function next(i) {
  if (i >= files.length) {
    client.close();
    return;
  }
  const text = fs.readFileSync(files[i], 'utf8');
  client.send(text, (err, ack) => {
    if (err) {
      console.error(String(err));
      process.exit(2);
    }
    console.log(JSON.stringify(ack.toString()));
    setImmediate(() => next(i + 1)); // the client clears its busy flag after this callback
  });
}

next(0);
