"""How long AWS takes to do what the world plays, in seconds of AWS's own time.

One table for the world's parts and for the model of a run's time on AWS
(``scalelab_rehearsal.aws_time``). Each figure is AWS's documented one where AWS
documents it, else this project's estimate of a typical run; docs/rehearsal.md
lists each with its source. What Provision configures (the target group's
health check, the deregistration delay, the group's instance warm-up) is not
here: the world reads it from the resources Provision made.
"""

from __future__ import annotations

# Amazon EC2: from the launch until cloud-init runs the user data (pending, running, the
# OS boot). AWS documents the states, not how long they take: an estimate.
INSTANCE_BOOT_SECONDS = 30.0
# user-data.sh from its start until the app answers on its port: Node.js from dnf, pm2
# from npm, pm2 starts the app (stress-ng installs in the background, off this path). An
# estimate for the lean bootstrap.
USER_DATA_SECONDS = 40.0
# An Application Load Balancer from CreateLoadBalancer in state "provisioning" until
# "active"; its targets' health checks start then. AWS documents the states, not their
# length: an estimate.
LOAD_BALANCER_ACTIVE_SECONDS = 90.0
# A deleted load balancer's network interfaces are released this long after
# DeleteLoadBalancer; until then its security group is in use (DependencyViolation). An
# estimate.
LOAD_BALANCER_RELEASE_SECONDS = 45.0
# An instance from shutting-down to terminated, its network interface with it; until then
# its security group is in use. An estimate.
INSTANCE_TERMINATION_SECONDS = 30.0
# A target's first health check comes within one HealthCheckIntervalSeconds of the app
# answering (or of the load balancer turning active): half of one on average. The
# threshold's further checks are an interval apart each (documented).
FIRST_CHECK_INTERVALS = 0.5
# CloudWatch with detailed monitoring: one datapoint a minute (documented), and target
# tracking's scale-out alarm (AlarmHigh) wants 3 of 3 datapoints above the target.
DATAPOINT_SECONDS = 60.0
ALARM_DATAPOINTS = 3
# Its scale-in alarm (AlarmLow) wants 15 of 15 datapoints below 90 % of the target: AWS
# creates it so (the alarm's own configuration; the user guide says target tracking "scales
# in more gradually"). Each scale-in removes one instance, then the count starts again.
SCALE_IN_ALARM_DATAPOINTS = 15
SCALE_IN_THRESHOLD_FRACTION = 0.9
# EventBridge from the Auto Scaling event to the invoked target: an estimate (AWS
# documents delivery as best effort, with no figure).
EVENT_DELIVERY_SECONDS = 1.0
# The group's default instance warm-up when the group sets none (Provision sets one).
FALLBACK_WARMUP_SECONDS = 0.0


def healthy_after(threshold: int, interval: float) -> float:
    """Seconds from the app answering until ``threshold`` checks ``interval`` apart passed."""
    return (threshold - 1 + FIRST_CHECK_INTERVALS) * interval
