//! 2. One tenant cannot starve the others: access sessions of one tunnel holding hundreds of
//!    streams that never send a header take neither the public visitors' slots nor another
//!    tunnel's.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tunnel_tests::{access, agent, http_get, origin, tunnel_id, Server};

use super::{access_session, runtime, served};

/// Attacking access sessions, and the streams each tries to hold (the mux lets a session
/// have 256 unanswered streams in flight, so this many sessions hold more than the server's
/// 8192 visitor slots).
const SESSIONS: usize = 34;
const STREAMS: usize = 490;

#[test]
fn streams_that_never_send_a_header_do_not_starve_other_tenants() {
    let (noisy, quiet) = (tunnel_id(), tunnel_id());
    // A long handshake timeout: the header-less streams are held for the whole test.
    let url = format!(
        "relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel=noisy.local:{noisy},quiet.local:{quiet}&handshakeTimeout=120s"
    );
    let server = Server::start(&["-L", &url], 1);
    let _noisy_agent = agent(&server, &[&format!("rtcp://:0/{}", origin::http("noisy"))], &noisy, "", 1);
    let _quiet_agent = agent(&server, &[&format!("rtcp://:0/{}", origin::http("quiet"))], &quiet, "", 2);
    let (_quiet_access, addrs) = access(&server, &["tcp://127.0.0.1:0/quiet.local"], &quiet, "");
    let rt = runtime();
    let held = rt.block_on(async {
        let mut held = Vec::new();
        let mut streams = 0;
        for _ in 0..SESSIONS {
            let Some((s, control)) = access_session(server.relay, &noisy).await else { continue };
            for _ in 0..STREAMS {
                let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_millis(300), s.open_stream()).await else {
                    break;
                };
                // The first byte of a stream header, and then nothing.
                if stream.write_all(&[0x03]).await.is_err() || stream.flush().await.is_err() {
                    break;
                }
                streams += 1;
                held.push(stream);
            }
            held.push(control);
            #[allow(clippy::mem_forget)] // the attacker's sessions stay open to the end of the test
            std::mem::forget(s);
        }
        eprintln!("the attacker holds {streams} header-less streams");
        held
    });
    let public = served(server.entrypoints[0], "quiet.local", 20);
    let private = (0..20).filter(|_| http_get(addrs[0], "quiet.local", "/").0 == 200).count();
    assert_eq!(public, 20, "public visitors of another tunnel are served during the attack");
    assert_eq!(private, 20, "another tunnel's access client is served during the attack");
    drop(held);
    drop(rt);
}
