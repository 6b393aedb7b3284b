//! Active health checks of targets (`healthCheck = "tcp"` or an HTTP path such as
//! `"/healthz"`): every `healthCheckInterval` the agent connects to the target (and for HTTP
//! asks `GET path`, wanting a 2xx or 3xx status) within `healthCheckTimeout`. A failed check
//! takes the target out of its group until a check passes ([`crate::target`]); failed dials
//! of real streams still count as well.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::target::{Probe, Target};
use crate::Shared;

/// Bytes read of a probe's answer: its status line fits.
const MAX_STATUS_LINE: usize = 1024;

/// Starts one checking task per target that has a check; they end with `stop`.
pub(crate) fn spawn(shared: &Arc<Shared>, tasks: &tokio_util::task::TaskTracker, stop: &CancellationToken) {
    for (i, target) in shared.targets.all().iter().enumerate() {
        let Some(check) = target.health_check.clone() else { continue };
        let (shared, stop) = (shared.clone(), stop.clone());
        tasks.spawn(async move {
            let mut every = tokio::time::interval(check.interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = stop.cancelled() => return,
                }
                let target = &shared.targets.all()[i];
                let outcome = tokio::time::timeout(check.timeout, probe(target, &check.probe)).await;
                let candidate = shared.targets.candidate(i);
                match outcome {
                    Ok(Ok(())) => candidate.checked(true, ""),
                    Ok(Err(why)) => candidate.checked(false, &why),
                    Err(_) => candidate.checked(false, &format!("no answer within {:?}", check.timeout)),
                }
            }
        });
    }
}

async fn probe(target: &Target, probe: &Probe) -> Result<(), String> {
    let mut tcp = TcpStream::connect(&target.addr).await.map_err(|e| format!("connect: {e}"))?;
    let Probe::Http(path) = probe else { return Ok(()) };
    if let Some(version) = target.proxy_protocol {
        // No visitor: a header that says so, which PROXY-protocol listeners accept.
        let header = crate::proxy_protocol::header(version, None, tcp.peer_addr().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        tcp.write_all(&header).await.map_err(|e| format!("write: {e}"))?;
    }
    let host = target.host.as_ref().map(|h| h.to_string()).unwrap_or_else(|| target.addr.clone());
    let host = host.trim_start_matches("*.").trim_start_matches('.');
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tunnel-agent\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
    let mut line = Vec::new();
    let mut buf = [0u8; 256];
    while !line.contains(&b'\n') && line.len() < MAX_STATUS_LINE {
        let n = tcp.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        line.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&line);
    let status = text.lines().next().unwrap_or_default();
    match status.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok()) {
        Some(code) if (200..400).contains(&code) => Ok(()),
        Some(code) => Err(format!("GET {path} answered {code}")),
        None => Err(format!("GET {path} got no HTTP status line")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes() {
        assert_eq!(Probe::parse("tcp"), Ok(Probe::Tcp));
        assert_eq!(Probe::parse("/healthz"), Ok(Probe::Http("/healthz".into())));
        for bad in ["http", "healthz", "/a b", ""] {
            assert!(Probe::parse(bad).unwrap_err().contains("tcp"), "{bad}");
        }
    }
}
