//! The AWS test fixtures themselves: moto starts, the fixture sees tagged resources, and the
//! fault proxy fails DeleteSecurityGroup N times before passing it through.

mod common;

use common::aws::{FaultProxy, Moto};

#[test]
fn moto_fixture_and_fault_proxy() {
    let moto = Moto::start(&[("MOTO_ENABLE_AMI_VALIDATION", "true")]);
    let net = moto.network("10.230.0.0/24");
    assert!(
        net.vpc.starts_with("vpc-") && net.subnet_a.starts_with("subnet-"),
        "{net:?}"
    );
    let none = moto.resources("fixture-test");
    assert_eq!(none["count"], 0, "{none:#}");

    let sg = moto.fixture(&[
        "create-sg",
        "--vpc",
        &net.vpc,
        "--name",
        "fx",
        "--deployment",
        "fixture-test",
    ]);
    let sg = sg["id"].as_str().expect("security group id").to_owned();
    let found = moto.resources("fixture-test");
    assert_eq!(found["count"], 1, "{found:#}");
    assert_eq!(found["security_groups"][0]["id"], sg.as_str(), "{found:#}");

    let proxy = FaultProxy::start(&moto.endpoint, 2);
    for _ in 0..2 {
        let r = moto.fixture_at(&proxy.endpoint, &["delete-sg", &sg]);
        assert_eq!(r["error"]["code"], "DependencyViolation", "{r}");
    }
    let r = moto.fixture_at(&proxy.endpoint, &["delete-sg", &sg]);
    assert_eq!(r["deleted"], true, "{r} (proxy log: {})", proxy.log());
    assert_eq!(proxy.log().lines().count(), 2, "{}", proxy.log());
    assert_eq!(moto.resources("fixture-test")["count"], 0);
}

/// The proxy in front of moto refuses what AWS's own service models refuse (moto accepts
/// them), and answers as AWS does.
#[test]
fn the_strict_proxy_refuses_what_aws_refuses() {
    let moto = Moto::start(&[]);
    let net = moto.network("10.231.0.0/24");
    let out = moto.python(&format!(
        "import boto3, botocore\n\
         c = boto3.client('elbv2', region_name='us-east-1')\n\
         for name, value in [('tg-ok', '/cluster1 to cluster1'), ('tg-arrow', '/cluster1 \u{2192} cluster1'), ('n' * 33, 'x')]:\n\
         \x20   try:\n\
         \x20       c.create_target_group(Name=name, Protocol='HTTP', Port=80, VpcId='{}', Tags=[{{'Key': 'Name', 'Value': value}}])\n\
         \x20       print('created')\n\
         \x20   except botocore.exceptions.ClientError as e:\n\
         \x20       print(e.response['Error']['Code'])\n",
        net.vpc
    ));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["created", "ValidationError", "ValidationError"]
    );
    let v = moto.take_violations();
    assert_eq!(v.len(), 2, "{v:#?}");
    assert!(
        v[0].contains("Tags.member.1.Value: '/cluster1 → cluster1' does not match the pattern"),
        "{v:#?}"
    );
    assert!(v[1].contains("is not 1 to 32 letters, digits or hyphens"), "{v:#?}");
}
