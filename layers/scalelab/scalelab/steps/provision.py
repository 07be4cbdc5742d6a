"""Provision: create the lab's resources in dependency order, each tagged and recorded at once.

Every step first looks for what a previous attempt of the same run made (by
its deterministic name) and reuses it, so a retry after a partial failure
neither fails on "already exists" nor creates a second copy.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from scalelab.contracts.provision import ProvisionResult
from scalelab.contracts.resources import Kind
from scalelab.contracts.run import RunConfig
from scalelab.core.aws import client, error_code
from scalelab.core.clock import utc_iso
from scalelab.core.errors import ForeignResource
from scalelab.core.naming import RUN_TAG, as_tag_list, tag_dict
from scalelab.core.observability import logger
from scalelab.core.settings import ProvisionSettings
from scalelab.resources.kinds import elb_tags, owned_by
from scalelab.steps.userdata import render_user_data
from scalelab.store.runs import RunTable

HTTP_PORT = 80
# The fastest health check ELB allows (interval 5 s, healthy threshold 2; the timeout
# below the interval), so a target is healthy about 10 s after its app answers.
# docs/performance.md gives the sources of this and the next settings.
HEALTH_CHECK_INTERVAL_SECONDS = 5
HEALTH_CHECK_TIMEOUT_SECONDS = 4
HEALTHY_THRESHOLD = 2
UNHEALTHY_THRESHOLD = 2
# Nothing is in flight when a lab's targets are deregistered (the probe ended long
# before teardown), so the group's deletion need not wait for draining.
DEREGISTRATION_DELAY_SECONDS = 0
# Time for user data to install Node.js and start the app before ELB health
# checks can mark an instance unhealthy and replace it.
HEALTH_CHECK_GRACE_SECONDS = 300
# Covers the bootstrap's own CPU after InService (user data installing packages) and
# ends before the stress starts, so the first instances count towards the alarm from
# the stress's first minute.
INSTANCE_WARMUP_SECONDS = 60
# Amazon Linux 2023's root snapshot size, for an image that does not say its own.
DEFAULT_ROOT_VOLUME_GIB = 8


@dataclass(frozen=True)
class Ingress:
    """The one inbound rule of a lab security group: TCP on ``port`` from one source."""

    port: int
    # Where EC2 lists the source ("IpRanges" or "UserIdGroupPairs") and the key naming it.
    source_list: str
    source_key: str
    source: str

    def permission(self) -> dict[str, Any]:
        return {
            "IpProtocol": "tcp",
            "FromPort": self.port,
            "ToPort": self.port,
            self.source_list: [{self.source_key: self.source}],
        }

    def others_in(self, permissions: list[dict[str, Any]]) -> list[str]:
        """Every rule in ``permissions`` that is not this one, as a person reads it."""
        found: list[str] = []
        for permission in permissions:
            ports = (permission.get("IpProtocol"), permission.get("FromPort"), permission.get("ToPort"))
            sources = [
                str(entry.get(key))
                for listed, key in (
                    ("IpRanges", "CidrIp"),
                    ("Ipv6Ranges", "CidrIpv6"),
                    ("PrefixListIds", "PrefixListId"),
                    ("UserIdGroupPairs", "GroupId"),
                )
                for entry in permission.get(listed, [])
                if (listed, key, str(entry.get(key))) != (self.source_list, self.source_key, self.source)
                or ports != ("tcp", self.port, self.port)
            ]
            found.extend(
                f"{ports[0]} port {_port_range(ports[1], ports[2])} from {source}" for source in sources
            )
        return found

    def __str__(self) -> str:
        return f"tcp port {self.port} from {self.source}"


def _unless_not_found(code: str, describe: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    """What ``describe`` answers, or None when AWS answers ``code`` (nothing of that name)."""
    try:
        return describe()
    except ClientError as exc:
        if error_code(exc) != code:
            raise
    return None


def _port_range(low: Any, high: Any) -> str:
    return str(low) if low == high else f"{low}-{high}"


class Provisioner:
    def __init__(self, config: RunConfig, settings: ProvisionSettings, table: RunTable) -> None:
        self.config = config
        self.settings = settings
        self.table = table
        self.names = config.names
        self.tags = config.tags
        self.ec2 = client("ec2")
        self.elbv2 = client("elbv2")
        self.autoscaling = client("autoscaling")
        # What an earlier try of this run created: a retry reuses these, and nothing else.
        record = table.load_run(config.run_id)
        self.recorded = dict(record.resources) if record is not None else {}

    def run(self) -> ProvisionResult:
        alb_sg = self.security_group(
            Kind.ALB_SECURITY_GROUP,
            self.names.alb_security_group,
            f"scalelab {self.config.run_id}: HTTP to the load balancer",
            Ingress(HTTP_PORT, "IpRanges", "CidrIp", self.settings.alb_ingress_cidr),
        )
        instance_sg = self.security_group(
            Kind.INSTANCE_SECURITY_GROUP,
            self.names.instance_security_group,
            f"scalelab {self.config.run_id}: app port from the load balancer only",
            Ingress(self.config.lab.app_port, "UserIdGroupPairs", "GroupId", alb_sg),
        )
        template_id, template_version, owned = self.launch_template(instance_sg)
        target_group_arn = self.target_group()
        load_balancer = self.load_balancer(alb_sg)
        listener_arn = self.listener(load_balancer["LoadBalancerArn"], target_group_arn)
        group_name = self.auto_scaling_group(template_id, template_version, target_group_arn)
        policy_arn = self.scaling_policy(group_name, load_balancer["LoadBalancerArn"], target_group_arn)
        logger.info("lab provisioned", extra={"load_balancer": load_balancer["DNSName"]})
        return ProvisionResult(
            alb_security_group_id=alb_sg,
            instance_security_group_id=instance_sg,
            launch_template_id=template_id,
            launch_template_version=template_version,
            launch_template_owned=owned,
            target_group_arn=target_group_arn,
            load_balancer_arn=load_balancer["LoadBalancerArn"],
            load_balancer_dns_name=load_balancer["DNSName"],
            listener_arn=listener_arn,
            auto_scaling_group_name=group_name,
            scaling_policy_arn=policy_arn,
            provisioned_at=utc_iso(),
        )

    # ---- helpers ---------------------------------------------------------------

    def _record(self, kind: Kind, physical_id: str, tags: dict[str, str] | None, *, created: bool) -> None:
        """Write what this call created into the ledger; check that what it found is this run's own:
        tagged for the run, and recorded in the run's ledger by an earlier try (a resource someone
        else made with the run's name and tag is never adopted)."""
        if not created:
            tags = tags or {}
            if not owned_by(tags, self.config.run_id):
                raise ForeignResource(
                    f"{kind} {physical_id} has this run's name but is tagged {RUN_TAG}="
                    f"{tags.get(RUN_TAG)!r}, not {self.config.run_id!r}; it was left untouched"
                )
            if self.recorded.get(kind) != physical_id:
                raise ForeignResource(
                    f"{kind} {physical_id} has this run's name and tag, but this run never recorded "
                    "creating it, so it was not adopted and was left untouched; delete it, or start "
                    "the run under another execution name"
                )
        self.table.record_resource(self.config.run_id, kind, physical_id)
        logger.info("created" if created else "reused", extra={"kind": kind, "id": physical_id})

    def _tag_specs(self, *resource_types: str) -> list[dict[str, Any]]:
        return [{"ResourceType": kind, "Tags": as_tag_list(self.tags)} for kind in resource_types]

    # ---- resources, in creation order -------------------------------------------

    def security_group(self, kind: Kind, name: str, description: str, ingress: Ingress) -> str:
        """The group with its one ingress rule; one found from an earlier try must have no other."""
        existing = self.ec2.describe_security_groups(
            Filters=[
                {"Name": "group-name", "Values": [name]},
                {"Name": "vpc-id", "Values": [self.config.lab.vpc_id]},
            ]
        )["SecurityGroups"]
        if existing:
            group_id: str = existing[0]["GroupId"]
            self._record(kind, group_id, tag_dict(existing[0].get("Tags")), created=False)
            others = ingress.others_in(existing[0].get("IpPermissions", []))
            if others:
                raise ForeignResource(
                    f"{kind} {group_id} lets in {', '.join(others)} besides what scalelab allows "
                    f"({ingress}); it was changed since this run made it, so it was not reused"
                )
        else:
            group_id = self.ec2.create_security_group(
                GroupName=name,
                Description=description,
                VpcId=self.config.lab.vpc_id,
                TagSpecifications=self._tag_specs("security-group"),
            )["GroupId"]
            self._record(kind, group_id, self.tags, created=True)
        self.allow_ingress(group_id, ingress)
        return group_id

    def allow_ingress(self, group_id: str, ingress: Ingress) -> None:
        try:
            self.ec2.authorize_security_group_ingress(
                GroupId=group_id,
                IpPermissions=[ingress.permission()],
                TagSpecifications=self._tag_specs("security-group-rule"),
            )
        except ClientError as exc:
            if error_code(exc) != "InvalidPermission.Duplicate":
                raise

    def launch_template(self, instance_sg: str) -> tuple[str, str, bool]:
        """(id, version, owned): the user's template as given, else one made for this run."""
        user_template = self.config.lab.launch_template
        if user_template is not None:
            found = self.ec2.describe_launch_templates(LaunchTemplateNames=[user_template.name])
            logger.info("using the user's launch template", extra={"launch_template": user_template.name})
            return found["LaunchTemplates"][0]["LaunchTemplateId"], user_template.version, False
        try:
            existing = self.ec2.describe_launch_templates(LaunchTemplateNames=[self.names.launch_template])[
                "LaunchTemplates"
            ][0]
        except ClientError as exc:
            if not error_code(exc).startswith("InvalidLaunchTemplateName"):
                raise
        else:
            template_id: str = existing["LaunchTemplateId"]
            self._record(Kind.LAUNCH_TEMPLATE, template_id, tag_dict(existing.get("Tags")), created=False)
            return template_id, str(existing["LatestVersionNumber"]), True
        created = self.ec2.create_launch_template(
            LaunchTemplateName=self.names.launch_template,
            VersionDescription=f"scalelab run {self.config.run_id}",
            LaunchTemplateData=self.launch_template_data(instance_sg),
            TagSpecifications=self._tag_specs("launch-template"),
        )["LaunchTemplate"]
        self._record(Kind.LAUNCH_TEMPLATE, created["LaunchTemplateId"], self.tags, created=True)
        return created["LaunchTemplateId"], str(created["LatestVersionNumber"]), True

    def launch_template_data(self, instance_sg: str) -> dict[str, Any]:
        lab = self.config.lab
        image_id = self.settings.ami_id or self.resolve_ami()
        image = self.ec2.describe_images(ImageIds=[image_id])["Images"][0]
        root_device = image["RootDeviceName"]
        # Same size as the image's root snapshot; only encryption and type change.
        root_size = next(
            (
                mapping["Ebs"]["VolumeSize"]
                for mapping in image.get("BlockDeviceMappings", [])
                if mapping.get("DeviceName") == root_device and "VolumeSize" in mapping.get("Ebs", {})
            ),
            DEFAULT_ROOT_VOLUME_GIB,
        )
        data: dict[str, Any] = {
            "ImageId": image_id,
            "InstanceType": lab.instance_type,
            "IamInstanceProfile": {"Arn": self.settings.instance_profile_arn},
            "SecurityGroupIds": [instance_sg],
            "MetadataOptions": {
                "HttpTokens": "required",
                "HttpEndpoint": "enabled",
                "HttpPutResponseHopLimit": 1,
            },
            # One-minute CloudWatch metrics, so the CPU alarm reacts in minutes, not quarters of an hour.
            "Monitoring": {"Enabled": True},
            "BlockDeviceMappings": [
                {
                    "DeviceName": root_device,
                    "Ebs": {
                        "Encrypted": True,
                        "VolumeType": "gp3",
                        "VolumeSize": root_size,
                        "DeleteOnTermination": True,
                    },
                }
            ],
            "UserData": base64.b64encode(render_user_data(lab.app_port, lab.health_path).encode()).decode(),
            "TagSpecifications": self._tag_specs("instance", "volume"),
        }
        if lab.instance_type.startswith("t"):
            # A burstable instance out of credits is throttled and reports low CPU,
            # so it would never scale out: let it burst.
            data["CreditSpecification"] = {"CpuCredits": "unlimited"}
        return data

    def resolve_ami(self) -> str:
        parameter = client("ssm").get_parameter(Name=self.settings.ami_ssm_parameter)
        image_id: str = parameter["Parameter"]["Value"]
        return image_id

    def target_group(self) -> str:
        lab = self.config.lab
        existing = _unless_not_found(
            "TargetGroupNotFound", lambda: self.elbv2.describe_target_groups(Names=[self.names.target_group])
        )
        if existing is not None:
            arn: str = existing["TargetGroups"][0]["TargetGroupArn"]
            self._record(Kind.TARGET_GROUP, arn, elb_tags(arn), created=False)
            return arn
        arn = self.elbv2.create_target_group(
            Name=self.names.target_group,
            Protocol="HTTP",
            Port=lab.app_port,
            VpcId=lab.vpc_id,
            TargetType="instance",
            HealthCheckProtocol="HTTP",
            HealthCheckPath=lab.health_path,
            HealthCheckIntervalSeconds=HEALTH_CHECK_INTERVAL_SECONDS,
            HealthCheckTimeoutSeconds=HEALTH_CHECK_TIMEOUT_SECONDS,
            HealthyThresholdCount=HEALTHY_THRESHOLD,
            UnhealthyThresholdCount=UNHEALTHY_THRESHOLD,
            Matcher={"HttpCode": "200"},
            Tags=as_tag_list(self.tags),
        )["TargetGroups"][0]["TargetGroupArn"]
        self._record(Kind.TARGET_GROUP, arn, self.tags, created=True)
        self.elbv2.modify_target_group_attributes(
            TargetGroupArn=arn,
            Attributes=[
                {"Key": "deregistration_delay.timeout_seconds", "Value": str(DEREGISTRATION_DELAY_SECONDS)}
            ],
        )
        return arn

    def load_balancer(self, alb_sg: str) -> dict[str, Any]:
        existing = _unless_not_found(
            "LoadBalancerNotFound",
            lambda: self.elbv2.describe_load_balancers(Names=[self.names.load_balancer]),
        )
        if existing is not None:
            found: dict[str, Any] = existing["LoadBalancers"][0]
            arn = found["LoadBalancerArn"]
            self._record(Kind.LOAD_BALANCER, arn, elb_tags(arn), created=False)
            return found
        created: dict[str, Any] = self.elbv2.create_load_balancer(
            Name=self.names.load_balancer,
            Subnets=self.config.lab.subnet_ids,
            SecurityGroups=[alb_sg],
            Scheme="internet-facing",
            Type="application",
            IpAddressType="ipv4",
            Tags=as_tag_list(self.tags),
        )["LoadBalancers"][0]
        self._record(Kind.LOAD_BALANCER, created["LoadBalancerArn"], self.tags, created=True)
        return created

    def listener(self, load_balancer_arn: str, target_group_arn: str) -> str:
        listeners = self.elbv2.describe_listeners(LoadBalancerArn=load_balancer_arn)["Listeners"]
        for existing in listeners:
            if existing["Port"] == HTTP_PORT:
                arn: str = existing["ListenerArn"]
                self._record(Kind.LISTENER, arn, elb_tags(arn), created=False)
                return arn
        arn = self.elbv2.create_listener(
            LoadBalancerArn=load_balancer_arn,
            Protocol="HTTP",
            Port=HTTP_PORT,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": target_group_arn}],
            Tags=as_tag_list(self.tags),
        )["Listeners"][0]["ListenerArn"]
        self._record(Kind.LISTENER, arn, self.tags, created=True)
        return arn

    def auto_scaling_group(self, template_id: str, template_version: str, target_group_arn: str) -> str:
        lab = self.config.lab
        name = self.names.auto_scaling_group
        existing = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
        if existing["AutoScalingGroups"]:
            self._record(
                Kind.AUTO_SCALING_GROUP,
                name,
                tag_dict(existing["AutoScalingGroups"][0]["Tags"]),
                created=False,
            )
            return name
        self.autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=name,
            LaunchTemplate={"LaunchTemplateId": template_id, "Version": template_version},
            MinSize=lab.min_size,
            MaxSize=lab.max_size,
            DesiredCapacity=lab.desired_capacity,
            VPCZoneIdentifier=",".join(lab.subnet_ids),
            TargetGroupARNs=[target_group_arn],
            HealthCheckType="ELB",
            HealthCheckGracePeriod=HEALTH_CHECK_GRACE_SECONDS,
            DefaultInstanceWarmup=INSTANCE_WARMUP_SECONDS,
            Tags=[
                {
                    "ResourceId": name,
                    "ResourceType": "auto-scaling-group",
                    "Key": key,
                    "Value": value,
                    "PropagateAtLaunch": True,
                }
                for key, value in {**self.tags, "Name": name}.items()
            ],
        )
        self._record(Kind.AUTO_SCALING_GROUP, name, self.tags, created=True)
        # One-minute group metrics show the scale-out in the console and to the judge.
        self.autoscaling.enable_metrics_collection(AutoScalingGroupName=name, Granularity="1Minute")
        return name

    def scaling_policy(self, group_name: str, load_balancer_arn: str, target_group_arn: str) -> str:
        """Target tracking on the run's signal; the policy is part of the group and goes with it."""
        scaling = self.config.lab.scaling
        metric: dict[str, str] = {"PredefinedMetricType": scaling.spec.predefined_type}
        if scaling.metric == "request_count":
            metric["ResourceLabel"] = request_count_label(load_balancer_arn, target_group_arn)
        response = self.autoscaling.put_scaling_policy(
            AutoScalingGroupName=group_name,
            PolicyName=self.names.scaling_policy,
            PolicyType="TargetTrackingScaling",
            TargetTrackingConfiguration={
                "PredefinedMetricSpecification": metric,
                "TargetValue": scaling.target,
            },
        )
        arn: str = response["PolicyARN"]
        return arn


def request_count_label(load_balancer_arn: str, target_group_arn: str) -> str:
    """ALBRequestCountPerTarget's ResourceLabel: ``app/<lb name>/<lb id>/targetgroup/<tg name>/<tg id>``,
    the final parts of the two ARNs."""
    balancer = load_balancer_arn.split(":loadbalancer/", 1)[1]
    group = target_group_arn.split(":", 5)[5]
    return f"{balancer}/{group}"


def provision_lab(config: RunConfig, settings: ProvisionSettings, table: RunTable) -> ProvisionResult:
    return Provisioner(config, settings, table).run()
