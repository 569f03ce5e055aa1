"""A TCP listener container (DICOM, HL7 MLLP, ...) on Fargate behind a Network Load Balancer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from aws_cdk import Annotations, CfnOutput, Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infrastructure.nag import acknowledge
from infrastructure.settings import CONTAINER_CONTEXT_EXCLUDES, LOG_RETENTION, REPO_ROOT, ListenerSizing

NO_CERTIFICATE_WARNING_ID = "archive:listener-without-tls"


class TcpListenerService(Construct):
    """One containerised TCP listener: image, task, service, autoscaling, NLB and its listener.

    The load balancer passes TCP through: with ``tls`` the container terminates TLS itself, since
    only it can check the client certificate against the organisation registered for the caller
    (docs/security.md). Without ``tls`` the listener is plain TCP and synth warns. Health checks
    open a TCP connection and close it without a byte (the listener treats that as a probe).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name: str,
        cluster: ecs.ICluster,
        dockerfile: str,
        container_port: int,
        environment: Mapping[str, str],
        tls: bool,
        client_cidrs: Sequence[str],
        internet_facing: bool,
        access_logs_bucket: s3.IBucket,
        listener_port: int | None = None,
        context_dir: Path = REPO_ROOT,
        context_excludes: Sequence[str] = CONTAINER_CONTEXT_EXCLUDES,
        log_retention: logs.RetentionDays = LOG_RETENTION,
        sizing: ListenerSizing = ListenerSizing(),
    ) -> None:
        super().__init__(scope, construct_id)
        vpc = cluster.vpc
        listener_port = listener_port or container_port

        self.log_group = logs.LogGroup(
            self, "Logs", retention=log_retention, removal_policy=RemovalPolicy.RETAIN
        )
        self.task_definition = ecs.FargateTaskDefinition(
            self,
            "Task",
            cpu=sizing.cpu,
            memory_limit_mib=sizing.memory_limit_mib,
            ephemeral_storage_gib=sizing.ephemeral_storage_gib,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.X86_64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        self.container = self.task_definition.add_container(
            name,
            image=ecs.ContainerImage.from_asset(
                str(context_dir),
                file=dockerfile,
                exclude=list(context_excludes),
                platform=ecr_assets.Platform.LINUX_AMD64,
            ),
            environment=dict(environment),
            logging=ecs.LogDrivers.aws_logs(stream_prefix=name, log_group=self.log_group),
            port_mappings=[ecs.PortMapping(container_port=container_port, protocol=ecs.Protocol.TCP)],
            stop_timeout=Duration.seconds(sizing.stop_timeout_seconds),
        )
        self.service = ecs.FargateService(
            self,
            "Service",
            cluster=cluster,
            task_definition=self.task_definition,
            desired_count=sizing.min_tasks,
            min_healthy_percent=100,
            max_healthy_percent=200,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            health_check_grace_period=Duration.seconds(60),
        )
        scaling = self.service.auto_scale_task_count(
            min_capacity=sizing.min_tasks, max_capacity=sizing.max_tasks
        )
        scaling.scale_on_cpu_utilization(
            "Cpu",
            target_utilization_percent=sizing.cpu_target_percent,
            scale_out_cooldown=Duration.seconds(60),
            scale_in_cooldown=Duration.seconds(300),
        )

        self.load_balancer_security_group = ec2.SecurityGroup(
            self,
            "LoadBalancerSecurityGroup",
            vpc=vpc,
            description=f"Who may connect to the {name} listener",
            allow_all_outbound=False,
        )
        for cidr in client_cidrs:
            self.load_balancer_security_group.add_ingress_rule(
                ec2.Peer.ipv4(cidr), ec2.Port.tcp(listener_port), f"{name} clients"
            )
        self.load_balancer = elbv2.NetworkLoadBalancer(
            self,
            "LoadBalancer",
            vpc=vpc,
            internet_facing=internet_facing,
            cross_zone_enabled=True,
            security_groups=[self.load_balancer_security_group],
            vpc_subnets=ec2.SubnetSelection(
                subnet_type=ec2.SubnetType.PUBLIC if internet_facing else ec2.SubnetType.PRIVATE_WITH_EGRESS
            ),
        )
        self.load_balancer.log_access_logs(access_logs_bucket, prefix=f"nlb/{name}")
        self.listener = self.load_balancer.add_listener(
            "Tcp", port=listener_port, protocol=elbv2.Protocol.TCP
        )
        if not tls:
            Annotations.of(self).add_warning_v2(
                NO_CERTIFICATE_WARNING_ID,
                f"No TLS for the {name} listener: it accepts plain TCP on port {listener_port}. "
                "Patient data must not cross networks unencrypted; see docs/security.md.",
            )
        self.target_group = self.listener.add_targets(
            "Tasks",
            port=container_port,
            protocol=elbv2.Protocol.TCP,
            targets=[self.service.load_balancer_target(container_name=name, container_port=container_port)],
            health_check=elbv2.HealthCheck(
                protocol=elbv2.Protocol.TCP,
                interval=Duration.seconds(30),
                healthy_threshold_count=2,
                unhealthy_threshold_count=2,
            ),
            # Long-lived connections get this long to finish when a task is drained.
            deregistration_delay=Duration.seconds(sizing.stop_timeout_seconds),
        )
        # The listener admits a caller only from the addresses registered for it (its AE title or
        # HL7 facility), so it must see the caller's address, not the load balancer's: IP targets
        # over TCP/TLS hide it unless told otherwise. The tasks still admit only the load balancer's
        # security group, which holds the client networks.
        self.target_group.set_attribute("preserve_client_ip.enabled", "true")
        self.service.connections.allow_from(
            self.load_balancer_security_group, ec2.Port.tcp(container_port), "from the load balancer"
        )
        CfnOutput(
            self,
            "Endpoint",
            value=self.load_balancer.load_balancer_dns_name,
            description=f"DNS name of the {name} load balancer (port {listener_port}); point the "
            "certificate's host name at it",
        )

        execution_role = self.task_definition.execution_role
        assert execution_role is not None  # created with the image asset above
        acknowledge(
            execution_role,
            "AwsSolutions-IAM5",
            "ecr:GetAuthorizationToken has no resource-level permissions; image pulls and log "
            "writes are granted on the image repository and the log group only.",
            findings=("Resource::*",),
        )
        acknowledge(
            self.task_definition,
            "AwsSolutions-ECS2",
            "The environment holds only resource names and tuning values (bucket, tables, AE title, "
            "timeouts, the TLS secret's ARN), no secrets; the TLS material is read from Secrets "
            "Manager at run time.",
        )

    @property
    def task_role(self) -> iam.IRole:
        return self.task_definition.task_role
