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
