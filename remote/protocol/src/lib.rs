//! What `agent` and the programs it deploys (`remote/`) agree on. Small on purpose: both
//! sides depend on it, so a change here is a change of the wire contract.

/// Every remote program answers 200 here once it serves; `agent deploy` polls it.
pub const HEALTH_PATH: &str = "/health";

/// The web app's answer, as the course lab's Flask app wrote it.
pub fn responding(instance: &str) -> String {
    format!("Instance {instance} is responding now!")
}

/// Which instance wrote a [`responding`] body (used to see how a balancer spread the load).
pub fn responder(body: &str) -> Option<&str> {
    body.trim()
        .strip_prefix("Instance ")?
        .strip_suffix(" is responding now!")
        .filter(|id| !id.is_empty() && !id.contains(char::is_whitespace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responding_round_trips() {
        let body = responding("i-0123456789abcdef0");
        assert_eq!(body, "Instance i-0123456789abcdef0 is responding now!");
        assert_eq!(responder(&body), Some("i-0123456789abcdef0"));
        assert_eq!(responder("Instance  is responding now!"), None);
        assert_eq!(responder("<html>502</html>"), None);
    }
}
