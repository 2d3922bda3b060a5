#!/usr/bin/env python3
"""Test fixture for the AWS emulator (moto): seed it and look at what the agent left there.

Run with the python of `tests/moto venv`.  Region us-east-1, credentials from the
environment, endpoint from --endpoint (default $AWS_ENDPOINT_URL).  Prints JSON.

  amis PATH                      write a MOTO_AMIS_PATH file of Ubuntu images
  network --cidr A.B.C.0/24      VPC (the /16 around it), subnet_a = the /24 (us-east-1a),
                                 subnet_b = the next /24 (us-east-1b)
  resources --deployment NAME    everything tagged agent:deployment=NAME that still exists
  create-sg --vpc ID --name N [--deployment NAME]     a security group (for fixture tests)
  delete-sg ID                   {"deleted": true} or {"error": {"code", "message"}}
  metrics-seed --deployment NAME --start UNIX
                                 a tagged deployment (2 instances, cluster2's with detailed
                                 monitoring; an ALB, 2 target groups) and CloudWatch data in
                                 the two minutes from START: two points per minute where Sum
                                 and Average differ, plus a decoy with the ALB's full ARN as
                                 dimension (the wrong form)
"""

import argparse
import base64
import ipaddress
import json
import os
import sys

TAG = "agent:deployment"
CANONICAL = "099720109477"
REGION = "us-east-1"

# (id, name, arch, creation date, owner).  The newest noble amd64 from Canonical is
# LATEST; the look-alike (other owner, newer date, same name pattern) must never win.
LATEST = "ami-0e2c8caa4b6378d8c"
IMAGES = [
    (LATEST, "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20241206", "x86_64", "2024-12-06T08:10:20.000Z", CANONICAL),
    ("ami-04b70fa74e45c3917", "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20240423", "x86_64", "2024-04-23T09:40:11.000Z", CANONICAL),
    ("ami-0a7a4e87939439934", "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-arm64-server-20241206", "arm64", "2024-12-06T08:10:40.000Z", CANONICAL),
    ("ami-005fc0f236362e99f", "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20241217", "x86_64", "2024-12-17T06:12:00.000Z", CANONICAL),
    ("ami-0badc0ffee0000001", "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20250101", "x86_64", "2025-01-01T00:00:00.000Z", "111122223333"),
]


def clients(endpoint):
    import boto3
    from botocore.config import Config

    cfg = Config(retries={"max_attempts": 1, "mode": "standard"})
    mk = lambda svc: boto3.client(svc, region_name=REGION, endpoint_url=endpoint, config=cfg)
    return mk("ec2"), mk("elbv2")


def tags_dict(tags):
    return {t["Key"]: t["Value"] for t in tags or []}


def cmd_amis(a, _ec2, _elb):
    images = [
        {
            "ami_id": ami,
            "name": name,
            "description": "Canonical, Ubuntu, " + name.split("/")[-1] if owner == CANONICAL else "look-alike",
            "owner_id": owner,
            "public": True,
            "state": "available",
            "architecture": arch,
            "virtualization_type": "hvm",
            "hypervisor": "xen",
            "image_type": "machine",
            "image_location": f"{owner}/{name}",
            "root_device_type": "ebs",
            "root_device_name": "/dev/sda1",
            "sriov": "simple",
            "platform": None,
            "creation_date": created,
        }
        for ami, name, arch, created, owner in IMAGES
    ]
    with open(a.path, "w", encoding="utf-8") as f:
        json.dump(images, f, indent=1)
    return {"path": a.path, "latest_noble_amd64": LATEST, "images": {i[0]: i[1] for i in IMAGES}}


def cmd_network(a, ec2, _elb):
    sub_a = ipaddress.ip_network(a.cidr)
    vpc_net = sub_a.supernet(new_prefix=16)
    all24 = list(vpc_net.subnets(new_prefix=24))
    sub_b = all24[(all24.index(sub_a) + 1) % len(all24)]
    vpc = ec2.create_vpc(CidrBlock=str(vpc_net))["Vpc"]["VpcId"]
    mk = lambda net, az: ec2.create_subnet(VpcId=vpc, CidrBlock=str(net), AvailabilityZone=az)["Subnet"]["SubnetId"]
    return {"vpc": vpc, "subnet_a": mk(sub_a, REGION + "a"), "subnet_b": mk(sub_b, REGION + "b")}


def rule_form(p):
    return {
        "protocol": p["IpProtocol"],
        "from_port": p.get("FromPort"),
        "to_port": p.get("ToPort"),
        "cidrs": [r["CidrIp"] for r in p.get("IpRanges", [])],
        "source_groups": [g["GroupId"] for g in p.get("UserIdGroupPairs", [])],
    }


def elb_tags(elb, arns):
    out = {}
    for i in range(0, len(arns), 20):
        for d in elb.describe_tags(ResourceArns=arns[i : i + 20])["TagDescriptions"]:
            out[d["ResourceArn"]] = tags_dict(d.get("Tags"))
    return out


def tg_arns(action):
    arns = [action["TargetGroupArn"]] if action.get("TargetGroupArn") else []
    for t in action.get("ForwardConfig", {}).get("TargetGroups", []):
        if t["TargetGroupArn"] not in arns:
            arns.append(t["TargetGroupArn"])
    return arns


def cmd_resources(a, ec2, elb):
    mine = [{"Name": f"tag:{TAG}", "Values": [a.deployment]}]
    ours = lambda tags: tags.get(TAG) == a.deployment
    out = {}

    out["instances"] = []
    for r in ec2.describe_instances(Filters=mine)["Reservations"]:
        for i in r["Instances"]:
            if i["State"]["Name"] == "terminated":
                continue
            ud = ec2.describe_instance_attribute(InstanceId=i["InstanceId"], Attribute="userData")
            ud = ud.get("UserData", {}).get("Value")
            out["instances"].append(
                {
                    "id": i["InstanceId"],
                    "state": i["State"]["Name"],
                    "instance_type": i["InstanceType"],
                    "image_id": i["ImageId"],
                    "key_name": i.get("KeyName"),
                    "subnet_id": i.get("SubnetId"),
                    "private_ip": i.get("PrivateIpAddress"),
                    "tags": tags_dict(i.get("Tags")),
                    "security_groups": [g["GroupId"] for g in i.get("SecurityGroups", [])],
                    "user_data": base64.b64decode(ud).decode("utf-8", "replace") if ud else None,
                    "metadata_options": {k: v for k, v in i.get("MetadataOptions", {}).items() if k != "State"},
                    "monitoring": i.get("Monitoring", {}).get("State"),
                }
            )

    out["security_groups"] = [
        {
            "id": g["GroupId"],
            "name": g["GroupName"],
            "vpc_id": g.get("VpcId"),
            "tags": tags_dict(g.get("Tags")),
            "ingress": [rule_form(p) for p in g.get("IpPermissions", [])],
        }
        for g in ec2.describe_security_groups(Filters=mine)["SecurityGroups"]
    ]

    out["key_pairs"] = [
        {"id": k.get("KeyPairId"), "name": k["KeyName"], "tags": tags_dict(k.get("Tags"))}
        for k in ec2.describe_key_pairs(Filters=mine)["KeyPairs"]
    ]

    lbs = elb.describe_load_balancers()["LoadBalancers"]
    tgs = elb.describe_target_groups()["TargetGroups"]
    listeners = [l for lb in lbs for l in elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]]
    rules = [
        dict(r, ListenerArn=l["ListenerArn"])
        for l in listeners
        for r in elb.describe_rules(ListenerArn=l["ListenerArn"])["Rules"]
    ]
    tags = elb_tags(
        elb,
        [x["LoadBalancerArn"] for x in lbs]
        + [x["TargetGroupArn"] for x in tgs]
        + [x["ListenerArn"] for x in listeners]
        + [x["RuleArn"] for x in rules if not x.get("IsDefault")],
    )
    t = lambda arn: tags.get(arn, {})

    out["load_balancers"] = [
        {
            "arn": lb["LoadBalancerArn"],
            "name": lb["LoadBalancerName"],
            "dns_name": lb.get("DNSName"),
            "scheme": lb.get("Scheme"),
            "type": lb.get("Type"),
            "state": lb.get("State", {}).get("Code"),
            "subnets": [z["SubnetId"] for z in lb.get("AvailabilityZones", [])],
            "availability_zones": [z["ZoneName"] for z in lb.get("AvailabilityZones", [])],
            "security_groups": lb.get("SecurityGroups", []),
            "tags": t(lb["LoadBalancerArn"]),
        }
        for lb in lbs
        if ours(t(lb["LoadBalancerArn"]))
    ]

    out["target_groups"] = [
        {
            "arn": g["TargetGroupArn"],
            "name": g["TargetGroupName"],
            "protocol": g.get("Protocol"),
            "port": g.get("Port"),
            "vpc_id": g.get("VpcId"),
            "health_check_path": g.get("HealthCheckPath"),
            "load_balancers": g.get("LoadBalancerArns", []),
            "tags": t(g["TargetGroupArn"]),
            "targets": [
                d["Target"]["Id"]
                for d in elb.describe_target_health(TargetGroupArn=g["TargetGroupArn"])["TargetHealthDescriptions"]
            ],
        }
        for g in tgs
        if ours(t(g["TargetGroupArn"]))
    ]

    out["listeners"] = [
        {
            "arn": l["ListenerArn"],
            "load_balancer_arn": l["LoadBalancerArn"],
            "port": l.get("Port"),
            "protocol": l.get("Protocol"),
            "default_actions": [{"type": x["Type"], "target_groups": tg_arns(x)} for x in l.get("DefaultActions", [])],
            "tags": t(l["ListenerArn"]),
        }
        for l in listeners
        if ours(t(l["ListenerArn"]))
    ]

    out["rules"] = [
        {
            "arn": r["RuleArn"],
            "listener_arn": r["ListenerArn"],
            "priority": r.get("Priority"),
            "path_patterns": [
                v
                for c in r.get("Conditions", [])
                if c.get("Field") == "path-pattern"
                for v in (c.get("PathPatternConfig", {}).get("Values") or c.get("Values", []))
            ],
            "target_groups": [g for x in r.get("Actions", []) if x["Type"] == "forward" for g in tg_arns(x)],
            "tags": t(r["RuleArn"]),
        }
        for r in rules
        if ours(t(r["RuleArn"]))
    ]

    out["count"] = sum(len(v) for v in out.values())
    return out


def cmd_create_sg(a, ec2, _elb):
    spec = [{"ResourceType": "security-group", "Tags": [{"Key": TAG, "Value": a.deployment}]}] if a.deployment else []
    g = ec2.create_security_group(GroupName=a.name, Description=a.name, VpcId=a.vpc, TagSpecifications=spec)
    return {"id": g["GroupId"]}


def cmd_delete_sg(a, ec2, _elb):
    from botocore.exceptions import ClientError

    try:
        ec2.delete_security_group(GroupId=a.id)
    except ClientError as e:
        err = e.response.get("Error", {})
        return {"error": {"code": err.get("Code"), "message": err.get("Message")}}
    return {"deleted": True}


def cmd_metrics_seed(a, ec2, elb):
    import datetime

    import boto3

    cw = boto3.client("cloudwatch", region_name=REGION, endpoint_url=a.endpoint)
    dep = a.deployment
    tags = lambda role=None: [{"Key": TAG, "Value": dep}] + ([{"Key": "agent:role", "Value": role}] if role else [])
    net = cmd_network(argparse.Namespace(cidr="10.99.1.0/24"), ec2, elb)
    image = ec2.describe_images()["Images"][0]["ImageId"]
    instances = {}
    for role in ("cluster1", "cluster2"):
        i = ec2.run_instances(
            ImageId=image, MinCount=1, MaxCount=1, InstanceType="t2.micro", SubnetId=net["subnet_a"],
            Monitoring={"Enabled": role == "cluster2"},
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags(role) + [{"Key": "Name", "Value": f"{dep}-{role}-0"}]}],
        )["Instances"][0]["InstanceId"]
        instances[role] = i
    lb = elb.create_load_balancer(Name=dep, Subnets=[net["subnet_a"], net["subnet_b"]], Tags=tags())["LoadBalancers"][0]
    lb_arn = lb["LoadBalancerArn"]
    lb_dim = lb_arn.split(":loadbalancer/", 1)[1]
    tg_dims = {}
    for role in ("cluster1", "cluster2"):
        tg = elb.create_target_group(Name=f"{dep}-{role}", Protocol="HTTP", Port=80, VpcId=net["vpc"], Tags=tags(role))
        tg_dims[role] = tg["TargetGroups"][0]["TargetGroupArn"].rsplit(":", 1)[1]
    t0 = int(a.start)
    at = lambda s: datetime.datetime.fromtimestamp(t0 + s, datetime.timezone.utc)

    def put(ns, name, dims, points):
        cw.put_metric_data(Namespace=ns, MetricData=[
            {"MetricName": name, "Dimensions": [{"Name": k, "Value": v} for k, v in dims], "Timestamp": at(s), "Value": v}
            for s, v in points
        ])

    for n, (role, i) in enumerate(instances.items()):
        put("AWS/EC2", "CPUUtilization", [("InstanceId", i)], [(5, 20.0 + n), (35, 40.0 + n), (65, 50.0)])
        put("AWS/EC2", "NetworkOut", [("InstanceId", i)], [(5, 1000.0), (35, 3000.0 + n), (65, 500.0)])
    put("AWS/ApplicationELB", "RequestCount", [("LoadBalancer", lb_dim)], [(5, 3.0), (35, 5.0), (65, 7.0)])
    put("AWS/ApplicationELB", "TargetResponseTime", [("LoadBalancer", lb_dim)], [(5, 0.1), (35, 0.3)])
    put("AWS/ApplicationELB", "RequestCount", [("LoadBalancer", lb_arn)], [(5, 1000.0)])
    for n, role in enumerate(("cluster1", "cluster2")):
        dims = [("TargetGroup", tg_dims[role]), ("LoadBalancer", lb_dim)]
        put("AWS/ApplicationELB", "RequestCount", dims, [(5, 2.0 + n), (35, 4.0)])
    return {"instances": instances, "load_balancer": lb_dim, "target_groups": tg_dims}


def cmd_untag(a, ec2, _elb):
    ec2.delete_tags(Resources=[a.id], Tags=[{"Key": a.key}])
    return {"untagged": a.id}


def cmd_tag(a, ec2, _elb):
    ec2.create_tags(Resources=[a.id], Tags=[{"Key": a.key, "Value": a.value}])
    return {"tagged": a.id}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", default=os.environ.get("AWS_ENDPOINT_URL"))
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("amis")
    s.add_argument("path")
    s.set_defaults(fn=cmd_amis)
    s = sub.add_parser("network")
    s.add_argument("--cidr", required=True)
    s.set_defaults(fn=cmd_network)
    s = sub.add_parser("resources")
    s.add_argument("--deployment", required=True)
    s.set_defaults(fn=cmd_resources)
    s = sub.add_parser("create-sg")
    s.add_argument("--vpc", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--deployment")
    s.set_defaults(fn=cmd_create_sg)
    s = sub.add_parser("delete-sg")
    s.add_argument("id")
    s.set_defaults(fn=cmd_delete_sg)
    s = sub.add_parser("metrics-seed")
    s.add_argument("--deployment", required=True)
    s.add_argument("--start", required=True)
    s.set_defaults(fn=cmd_metrics_seed)
    s = sub.add_parser("untag")
    s.add_argument("id")
    s.add_argument("--key", required=True)
    s.set_defaults(fn=cmd_untag)
    s = sub.add_parser("tag")
    s.add_argument("id")
    s.add_argument("--key", required=True)
    s.add_argument("--value", required=True)
    s.set_defaults(fn=cmd_tag)
    a = p.parse_args()
    if a.cmd == "amis":
        ec2 = elb = None
    else:
        if not a.endpoint:
            p.error("--endpoint (or AWS_ENDPOINT_URL) is required")
        ec2, elb = clients(a.endpoint)
    try:
        print(json.dumps(a.fn(a, ec2, elb), default=str))
    except Exception as e:  # one clear line, not a botocore traceback
        print(f"aws_fixture {a.cmd}: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
