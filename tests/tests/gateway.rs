//! The sealed-address gateway ([GW], seed `004_*`), end to end: every line is made by the
//! real `openssl enc -e -aes-256-cbc -a -salt`, every answer is read as a client reads it
//! (the status line, then the bytes), and the exact bytes are checked: a status line and
//! nothing else before the target's bytes, or a status line and a close.
//!
//! Durations are printed as `measured: ...` and checked only against their lower bound and a
//! generous upper one.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tunnel_tests::gateway::{ask, connect, rest_until_close, seal, status, Blackhole, CLIENT_WAIT};
use tunnel_tests::payload::write_random;
use tunnel_tests::{addr_in, agent_config, origin, tunnel_id, Proc, Server};

#[path = "gateway/protections.rs"]
mod protections;
#[path = "gateway/reuse.rs"]
mod reuse;

/// The seed's example secret.
const SECRET: &str = "p0S8rX680*48";

/// One server with an agent and several gateways:
/// - tunnel routes: `echo.test` (an echo origin), `refused.test` (a closed port),
///   `silent.test` (a target that never answers), `private.test` (the echo origin, under a
///   private rule), `noagent.test` (a tunnel without an agent);
/// - direct routes allowed: the echo origin, the closed port and the silent target.
struct World {
    server: Server,
    _agent: (Proc, tempfile::TempDir),
    echo: SocketAddr,
    closed: SocketAddr,
    silent: Blackhole,
    /// `timeout=1s`, `retry=1`, `lineTimeout=1s`, default key derivation (sha256).
    main: SocketAddr,
    /// `kdf=md5`.
    md5: SocketAddr,
    /// `kdf=pbkdf2`.
    pbkdf2: SocketAddr,
    /// `lineTimeout=60s`: only the byte cap can end a long line early.
    patient: SocketAddr,
    /// `timeout=1s`, `retry=0`.
    no_retry: SocketAddr,
}

impl World {
    fn start() -> World {
        let (id, other) = (tunnel_id(), tunnel_id());
        let (echo, closed, silent) = (origin::echo(), origin::closed_port(), Blackhole::new());
        let rules =
            format!("echo.test:{id},refused.test:{id},silent.test:{id},private.test:${id},noagent.test:{other}");
        let allow = format!("{echo},{closed},{}", silent.addr);
        let gateway = |query: &str| format!("gateway://127.0.0.1:0?secret={SECRET}&allowAddresses={allow}{query}");
        let gateways = [
            gateway("&timeout=1s&retry=1&lineTimeout=1s"),
            gateway("&kdf=md5"),
            gateway("&kdf=pbkdf2"),
            gateway("&lineTimeout=60s"),
            gateway("&timeout=1s&retry=0"),
        ];
        let relay = format!("relay://127.0.0.1:0?tunnel={rules}");
        let mut args = vec!["-L", &relay, "--log-level", "tunnel_server=debug,info"];
        for g in &gateways {
            args.extend(["--gateway", g.as_str()]);
        }
        let server = Server::start(&args, 0);
        let addrs: Vec<SocketAddr> =
            (1..=gateways.len()).map(|n| addr_in(&server.proc.wait_for_nth("gateway listening", n))).collect();
        let mut toml =
            format!("[relay]\naddr = \"{}\"\ntunnel.id = \"{id}\"\n[[services]]\ntype = \"rtcp\"\n", server.relay);
        for (host, addr) in
            [("echo.test", echo), ("refused.test", closed), ("silent.test", silent.addr), ("private.test", echo)]
        {
            toml += &format!("[[services.forwarder.nodes]]\naddr = \"{addr}\"\nhost = \"{host}\"\n");
        }
        let agent = agent_config(&server, &toml, 1);
        World {
            server,
            _agent: agent,
            echo,
            closed,
            silent,
            main: addrs[0],
            md5: addrs[1],
            pbkdf2: addrs[2],
            patient: addrs[3],
            no_retry: addrs[4],
        }
    }
}

/// Sends `data` after a 200 and returns what comes back until the gateway closes.
fn echoed(gateway: SocketAddr, line: &str, with_line: &[u8], after: &[u8]) -> Vec<u8> {
    let (s, mut tcp) = ask(gateway, line, with_line);
    assert_eq!(s, "200\n", "status for a line to an echo target");
    tcp.write_all(after).unwrap();
    tcp.shutdown(Shutdown::Write).unwrap();
    rest_until_close(&mut tcp)
}

/// Asserts the gateway answers `line` with exactly `want` and closes.
fn refused(gateway: SocketAddr, line: &str, want: &str) -> Duration {
    let started = Instant::now();
    let (s, mut tcp) = ask(gateway, line, &[]);
    let took = started.elapsed();
    assert_eq!(s, want, "status for {line:?}");
    assert_eq!(rest_until_close(&mut tcp), b"", "nothing may follow a {want:?} status line");
    took
}

#[test]
fn a_sealed_hostname_reaches_its_tunnel_byte_exact() {
    const LEN: usize = 8 << 20;
    let w = World::start();
    let (s, mut tcp) = ask(w.main, &seal(SECRET, "echo.test", &[]), &[]);
    assert_eq!(s, "200\n");
    let mut writer = tcp.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let hash = write_random(&mut writer, 0x6a7e, LEN).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
        hash
    });
    let (mut hash, mut len, mut buf) = (Sha256::new(), 0usize, vec![0u8; 64 << 10]);
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hash.update(&buf[..n]);
                len += n;
            }
            Err(e) => panic!("echo read failed after {len} bytes: {e}"),
        }
    }
    assert_eq!(len, LEN, "bytes echoed through the tunnel");
    assert_eq!(hex::encode(hash.finalize()), sender.join().unwrap(), "echoed bytes differ from those sent");
    w.server.proc.wait_for("gateway visitor done");
}

#[test]
fn bytes_sent_in_the_same_packet_as_the_line_arrive_first() {
    let w = World::start();
    let direct = w.echo.to_string();
    for target in ["echo.test", direct.as_str()] {
        let line = seal(SECRET, target, &[]);
        let got = echoed(w.main, &line, b"sent with the line|", b"sent after the 200");
        assert_eq!(
            String::from_utf8_lossy(&got),
            "sent with the line|sent after the 200",
            "{target}: the echo, in order, and nothing else after the status line"
        );
    }
}

#[test]
fn every_openssl_key_derivation_opens_and_a_foreign_one_is_refused() {
    let w = World::start();
    let target = w.echo.to_string();
    for (gateway, extra) in [
        (w.main, &[][..]),
        (w.main, &["-md", "sha256"][..]),
        (w.md5, &["-md", "md5"][..]),
        (w.pbkdf2, &["-pbkdf2"][..]),
        (w.pbkdf2, &["-pbkdf2", "-iter", "10000"][..]),
    ] {
        let got = echoed(gateway, &seal(SECRET, &target, extra), b"", b"ping");
        assert_eq!(got, b"ping", "openssl enc {extra:?}");
    }
    // The seed's own example line, from an OpenSSL of the MD5 era, opens (no 401) and names
    // 127.0.0.1:62863, which this gateway does not allow.
    let (s, mut tcp) = ask(w.md5, "U2FsdGVkX19KIJ9OQJKT/yHGMrS+5SsBAAjetomptQ0=", &[]);
    assert_eq!(s, "502\n", "the seed's address is not allowed here");
    assert_eq!(rest_until_close(&mut tcp), b"");
    for (gateway, extra) in [(w.main, &["-md", "md5"][..]), (w.md5, &[][..]), (w.main, &["-pbkdf2"][..])] {
        refused(gateway, &seal(SECRET, &target, extra), "401\n");
    }
}

#[test]
fn a_wrong_secret_gets_401_and_garbage_400() {
    let w = World::start();
    refused(w.main, &seal("not the secret", "echo.test", &[]), "401\n");
    refused(w.main, &seal(SECRET, "not an address at all", &[]), "401\n");
    refused(w.main, &seal(SECRET, "echo.test:99999", &[]), "401\n");
    refused(w.main, "hello world", "400\n");
    refused(w.main, "", "400\n");
    refused(w.main, "U2FsdGVkX19KIJ9OQJKT", "400\n");
    refused(w.main, "aGVsbG8gd29ybGQ=", "400\n");
    let binary: Vec<u8> = (0..=255u8).filter(|&b| b != b'\n').collect();
    let mut tcp = connect(w.main);
    tcp.write_all(&binary).unwrap();
    tcp.write_all(b"\n").unwrap();
    assert_eq!(status(&mut tcp), "400\n", "binary garbage");
    assert_eq!(rest_until_close(&mut tcp), b"");
    let mut tcp = connect(w.main);
    tcp.write_all(b"U2FsdGVkX1").unwrap();
    tcp.shutdown(Shutdown::Write).unwrap();
    assert_eq!(status(&mut tcp), "400\n", "closed before the end of the line");
    assert_eq!(rest_until_close(&mut tcp), b"");
    let out = w.server.proc.output();
    assert!(!out.contains(SECRET), "the secret is never logged");
}

#[test]
fn an_overlong_or_too_slow_line_gets_400_within_its_bound() {
    let w = World::start();
    // The byte cap (1024) answers at once on a gateway whose line timeout is a minute.
    let started = Instant::now();
    let mut tcp = connect(w.patient);
    let long = vec![b'A'; 4096];
    let _ = tcp.write_all(&long);
    assert_eq!(status(&mut tcp), "400\n", "an over-long line");
    let took = started.elapsed();
    eprintln!("measured: over-long line refused in {took:?}");
    assert!(took < Duration::from_secs(30), "the cap, not the 60 s timeout, must end it: {took:?}");
    assert_eq!(rest_until_close(&mut tcp), b"");

    // A line that trickles in (a byte every 100 ms) meets the 1 s deadline of the whole line.
    let started = Instant::now();
    let mut tcp = connect(w.main);
    let mut trickle = tcp.try_clone().unwrap();
    let writer = thread::spawn(move || {
        for b in b"U2FsdGVkX19KIJ9OQJKT/yHGMrS+5SsBAAjetomptQ0=" {
            if trickle.write_all(&[*b]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    assert_eq!(status(&mut tcp), "400\n", "a too-slow line");
    let took = started.elapsed();
    eprintln!("measured: trickled line refused after {took:?} (lineTimeout 1s)");
    assert!(took >= Duration::from_secs(1), "refused before the line timeout: {took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    writer.join().unwrap();

    // And one that never comes.
    let started = Instant::now();
    let mut tcp = connect(w.main);
    assert_eq!(status(&mut tcp), "400\n", "no line at all");
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(20), "{took:?}");
    assert_eq!(rest_until_close(&mut tcp), b"");
}

#[test]
fn unreachable_targets_get_502_and_private_rules_stay_private() {
    let w = World::start();
    let not_allowed = origin::echo();
    for target in [
        w.closed.to_string(),
        "refused.test".to_owned(),
        "nowhere.test".to_owned(),
        "private.test".to_owned(),
        "noagent.test".to_owned(),
        not_allowed.to_string(),
    ] {
        refused(w.main, &seal(SECRET, &target, &[]), "502\n");
    }
    // The log lines are read by another thread: wait for them rather than read them once.
    w.server.proc.wait_for("host private.test has only a private rule (and not in allowAddresses)");
    w.server.proc.wait_for(&format!("no route for host {} (and not in allowAddresses)", not_allowed.ip()));
    // The same tunnel, under its public name, is reachable: privacy belongs to the rule.
    assert_eq!(echoed(w.main, &seal(SECRET, "echo.test", &[]), b"", b"x"), b"x");
}

#[test]
fn a_silent_target_gets_504_after_timeout_times_attempts() {
    let w = World::start();
    let silent = w.silent.addr.to_string();
    for (gateway, target, attempts) in
        [(w.main, silent.as_str(), 2), (w.main, "silent.test", 2), (w.no_retry, silent.as_str(), 1)]
    {
        let started = Instant::now();
        let (s, mut tcp) = ask(gateway, &seal(SECRET, target, &[]), &[]);
        let took = started.elapsed();
        let local = tcp.local_addr().unwrap();
        assert_eq!(s, "504\n", "{target}");
        assert_eq!(rest_until_close(&mut tcp), b"");
        eprintln!("measured: {target} answered 504 after {took:?} (attempts of 1 s: {attempts})");
        let lower = Duration::from_secs(attempts);
        assert!(took >= lower, "{target}: 504 after {took:?}, before {attempts} x timeout");
        assert!(took < lower + Duration::from_secs(20), "{target}: {took:?}");
        let log = w.server.proc.output();
        let retries = log
            .lines()
            .filter(|l| l.contains("gateway dial failed, retrying") && l.contains(&local.to_string()))
            .count();
        assert_eq!(retries as u64, attempts - 1, "{target}: retries logged for {local}:\n{log}");
    }
}

#[test]
fn the_pid_file_names_the_server_and_kill_of_it_exits_cleanly_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("gateway.pid");
    let config = dir.path().join("server.toml");
    let echo = origin::echo();
    std::fs::write(
        &config,
        format!(
            "addr = \"127.0.0.1:0\"\npidFile = {:?}\n[limits]\ngracePeriod = \"1s\"\n\
             [[gateway]]\naddr = \"127.0.0.1:0\"\nsecret = \"{SECRET}\"\nallowAddresses = [\"{echo}\"]\n",
            pid_file.display()
        ),
    )
    .unwrap();
    let mut server = Server::start(&["-C", config.to_str().unwrap()], 0);
    let gateway = addr_in(&server.proc.wait_for("gateway listening"));
    server.proc.wait_for("PID file written");
    let written = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(written.trim(), server.proc.pid().to_string());

    // A visitor stays connected to a direct target across the shutdown.
    let (s, mut visitor) = ask(gateway, &seal(SECRET, &echo.to_string(), &[]), b"ping");
    assert_eq!(s, "200\n");
    let mut pong = [0u8; 4];
    visitor.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"ping");

    // As the seed stops its gateway: kill `cat gateway.pid`.
    let started = Instant::now();
    let kill = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("kill $(cat '{}')", pid_file.display()))
        .status()
        .unwrap();
    assert!(kill.success());
    assert_eq!(server.proc.wait_exit(), Some(0), "a clean exit on SIGTERM:\n{}", server.proc.output());
    eprintln!("measured: exit {:?} after the TERM with a visitor connected (grace period 1 s)", started.elapsed());
    assert!(!pid_file.exists(), "the PID file is removed at exit");
    let (_, closed) = tunnel_tests::read_until_close(&mut visitor, CLIENT_WAIT);
    assert!(closed, "the visitor's connection ends with the server");
}

#[test]
fn the_example_configuration_serves_lines_of_old_and_new_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let echo = origin::echo();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/server-gateway.toml");
    let mut text = std::fs::read_to_string(example).unwrap();
    let pid_file = dir.path().join("gateway.pid");
    for (from, to) in [
        ("addr = \":8443\"", "addr = \"127.0.0.1:0\"".to_owned()),
        ("addr = \":9000\"", "addr = \"127.0.0.1:0\"".to_owned()),
        ("pidFile = \"gateway.pid\"", format!("pidFile = {:?}", pid_file.display())),
        ("\"127.0.0.1:62863\"", format!("\"{echo}\"")),
    ] {
        assert!(text.contains(from), "the example has no {from}");
        text = text.replace(from, &to);
    }
    let config = dir.path().join("server-gateway.toml");
    std::fs::write(&config, text).unwrap();
    let server = Server::start(&["-C", config.to_str().unwrap()], 0);
    let gateway = addr_in(&server.proc.wait_for("gateway listening"));
    server.proc.wait_for("PID file written");
    for extra in [&["-md", "md5"][..], &[][..]] {
        let got = echoed(gateway, &seal(SECRET, &echo.to_string(), extra), b"", b"seed");
        assert_eq!(got, b"seed", "openssl enc {extra:?}");
    }
    assert!(pid_file.exists());
}
