//! The binary agent uploads must start on Ubuntu 22.04, whose glibc is 2.35: it may not ask
//! for a newer symbol version than that, whatever glibc this build machine has.

use std::process::Command;

#[test]
fn needs_no_glibc_newer_than_ubuntu_22_04() {
    let out = Command::new("objdump")
        .arg("-T")
        .arg(env!("CARGO_BIN_EXE_agent-web"))
        .output()
        .expect("objdump (binutils) is installed");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let newest = text
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
        })
        .max()
        .expect("a dynamically linked binary names glibc versions");
    assert!(newest <= (2, 35), "agent-web needs GLIBC_{}.{}", newest.0, newest.1);
}
