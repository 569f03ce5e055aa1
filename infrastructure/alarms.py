"""Alarms that page the operator, on an encrypted SNS topic."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

# Where metrics counted from log lines (metric filters) go.
ALARM_METRICS_NAMESPACE = "ImagingArchive/Logs"


class OperatorAlarms(Construct):
    """An SNS topic for the operator and the alarms that publish to it."""

    def __init__(self, scope: Construct, construct_id: str, *, email: str | None) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            description="Encrypts the imaging archive's operator alarm topic",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        # CloudWatch publishes alarm notifications to the topic, so it must be able to use the key.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
            )
        )
        self.topic = sns.Topic(self, "Topic", master_key=self.key, enforce_ssl=True)
        if email:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))

    def alarm_on_dead_letters(self, dead_letter_queue: sqs.IQueue, *, purpose: str) -> cloudwatch.Alarm:
        """Alarm as soon as one message is in ``dead_letter_queue``: work that was given up on."""
        alarm = cloudwatch.Alarm(
            self,
            f"DeadLetters{purpose.title().replace(' ', '')}",
            alarm_description=f"Messages of the {purpose} queue failed repeatedly and were dead-lettered",
            metric=dead_letter_queue.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(1), statistic=cloudwatch.Stats.MAXIMUM
            ),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self._notify(alarm)
        return alarm

    def alarm_on_metric(
        self, metric: cloudwatch.IMetric, *, purpose: str, description: str
    ) -> cloudwatch.Alarm:
        """Alarm as soon as ``metric`` (a count of failures the code reports) is at least 1."""
        alarm = cloudwatch.Alarm(
            self,
            _construct_id(purpose),
            alarm_description=description,
            metric=metric,
            threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self._notify(alarm)
        return alarm

    def alarm_on_log_text(
        self, log_group: logs.ILogGroup, text: str, *, purpose: str, description: str
    ) -> cloudwatch.Alarm:
        """Alarm on every log line of ``log_group`` containing ``text`` (a metric filter counts them)."""
        metric_filter = logs.MetricFilter(
            self,
            f"{_construct_id(purpose)}Filter",
            log_group=log_group,
            filter_pattern=logs.FilterPattern.literal(f'"{text}"'),
            metric_namespace=ALARM_METRICS_NAMESPACE,
            metric_name=_construct_id(purpose),
            metric_value="1",
        )
        return self.alarm_on_metric(
            metric_filter.metric(statistic=cloudwatch.Stats.SUM, period=Duration.minutes(5)),
            purpose=purpose,
            description=description,
        )

    def _notify(self, alarm: cloudwatch.Alarm) -> None:
        action = cloudwatch_actions.SnsAction(self.topic)
        alarm.add_alarm_action(action)
        alarm.add_ok_action(action)

    def alarm_to_operator(self, alarm: cloudwatch.Alarm) -> None:
        """Send an alarm made elsewhere (e.g. a failing scheduled job) to the operator's topic."""
        self._notify(alarm)


def _construct_id(purpose: str) -> str:
    return purpose.title().replace(" ", "")
