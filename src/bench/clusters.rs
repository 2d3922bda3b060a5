//! `agent bench clusters`: the course's Lab 1 procedure against the load balancer. For each
//! cluster path, thread A sends 1000 GETs one after another; thread B sends 500, pauses 60 s,
//! then sends 1000 more; every thread of every cluster runs at once. `scale` multiplies the
//! counts and the pause, for quick runs.

use std::time::Duration;

use hyper::Method;
use hyper::body::Bytes;

use super::load::{Phase, Read, Stream};

/// The lab's counts and pause at scale 1.
const A_REQUESTS: f64 = 1000.0;
const B_FIRST: f64 = 500.0;
const B_PAUSE_SECS: f64 = 60.0;
const B_SECOND: f64 = 1000.0;

/// The lab's threads for each cluster path, as pure data.
pub fn streams(base: &str, paths: &[String], scale: f64, pause: Option<Duration>) -> anyhow::Result<Vec<Stream>> {
    let n = |base: f64| ((base * scale).round() as usize).max(1);
    let pause = pause.unwrap_or_else(|| Duration::from_secs_f64(B_PAUSE_SECS * scale));
    let mut out = Vec::new();
    for path in paths {
        let url: hyper::Uri = format!("{}{path}", base.trim_end_matches('/'))
            .parse()
            .map_err(|e| anyhow::anyhow!("{base}{path} is not a URL: {e}"))?;
        let cluster = path.trim_start_matches('/');
        let stream = |thread: &str, phases: Vec<Phase>| Stream {
            name: format!("{cluster} {thread}"),
            group: path.clone(),
            method: Method::GET,
            url: url.clone(),
            body: Bytes::new(),
            phases,
        };
        out.push(stream("A", vec![Phase::Requests(n(A_REQUESTS))]));
        let mut b = vec![Phase::Requests(n(B_FIRST))];
        if !pause.is_zero() {
            b.push(Phase::Pause(pause));
        }
        b.push(Phase::Requests(n(B_SECOND)));
        out.push(stream("B", b));
    }
    Ok(out)
}

/// The web app answers `Instance ID is responding now!`.
pub fn reading(body: &[u8]) -> Result<Read<'_>, String> {
    let id = std::str::from_utf8(body).ok().and_then(agent_protocol::responder);
    match id {
        Some(id) => Ok(Read {
            responder: Some(id.into()),
            ..Read::default()
        }),
        None => Err(format!(
            "not the web app's answer: {:?}",
            String::from_utf8_lossy(body).chars().take(60).collect::<String>()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lab_procedure_per_cluster() {
        let paths = ["/cluster1".to_owned(), "/cluster2".to_owned()];
        let s = streams("http://lb:80/", &paths, 1.0, None).unwrap();
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["cluster1 A", "cluster1 B", "cluster2 A", "cluster2 B"]);
        assert_eq!(s[0].phases, [Phase::Requests(1000)]);
        assert_eq!(
            s[1].phases,
            [
                Phase::Requests(500),
                Phase::Pause(Duration::from_secs(60)),
                Phase::Requests(1000)
            ]
        );
        assert_eq!(s[3].url, "http://lb:80/cluster2");
        assert_eq!(s[3].group, "/cluster2");

        let quick = streams("http://lb", &paths, 0.01, None).unwrap();
        assert_eq!(quick[0].phases, [Phase::Requests(10)]);
        assert_eq!(
            quick[1].phases,
            [
                Phase::Requests(5),
                Phase::Pause(Duration::from_millis(600)),
                Phase::Requests(10)
            ]
        );
        let no_pause = streams("http://lb", &paths, 0.001, Some(Duration::ZERO)).unwrap();
        assert_eq!(no_pause[1].phases, [Phase::Requests(1), Phase::Requests(1)]);
    }

    #[test]
    fn answers_name_their_instance() {
        assert_eq!(
            reading(b"Instance i-0abc is responding now!")
                .unwrap()
                .responder
                .as_deref(),
            Some("i-0abc")
        );
        assert_eq!(
            reading(b"<html>502 Bad Gateway</html>").unwrap_err(),
            "not the web app's answer: \"<html>502 Bad Gateway</html>\""
        );
    }
}
