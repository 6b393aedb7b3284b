//! HTTP visitors beyond the host: path rules (longest prefix, normalised paths), basic
//! authentication per rule, and HTTP/2 (prior knowledge, each stream routed by its own
//! `:authority`; `Upgrade: h2c` answered over HTTP/1.1).

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;

use tunnel_tests::{agent, bin, curl, hash_password, origin, tunnel_id, Server, WAIT};

/// Starts a server from `toml` (its relay and one entrypoint on port 0 are prepended).
fn server(dir: &Path, rules: &str) -> Server {
    let path = dir.join("server.toml");
    std::fs::write(&path, format!("addr = \"127.0.0.1:0\"\nentryPoint = [\"127.0.0.1:0\"]\n{rules}")).unwrap();
    Server::start(&["-C", path.to_str().unwrap()], 1)
}

/// `curl http://EP/PATH` for `host` with extra arguments: (status, body).
fn get(ep: SocketAddr, host: &str, path: &str, extra: &[&str]) -> (u16, String) {
    let url = format!("http://{ep}{path}");
    let header = format!("Host: {host}");
    let mut args = vec!["--path-as-is", "-w", "\n%{http_code}", "-H", &header];
    args.extend_from_slice(extra);
    args.push(&url);
    let (code, out) = curl(&args);
    assert_eq!(code, 0, "curl {url}: exit {code}: {out}");
    let (body, status) = out.rsplit_once('\n').expect("status line");
    (status.trim().parse().expect("HTTP status"), body.to_owned())
}

/// The origin that answered a body of `origin=NAME host=... path=PATH ...`: (NAME, PATH).
fn who(body: &str) -> (String, String) {
    let field = |k: &str| body.split_whitespace().find_map(|w| w.strip_prefix(k)).unwrap_or("?").to_owned();
    (field("origin="), field("path="))
}

#[test]
fn path_rules_take_the_longest_prefix_of_the_normalised_path() {
    let (a, b, c) = (tunnel_id(), tunnel_id(), tunnel_id());
    let (origin_a, _) = origin::http_counting("A");
    let (origin_b, _) = origin::http_counting("B");
    let (origin_c, seen_c) = origin::http_counting("C");
    let dir = tempfile::tempdir().unwrap();
    let server = server(
        dir.path(),
        &format!(
            "[[ingress.rules]]\nhostname = \"a.example\"\nendpoint = \"{a}\"\n\
             [[ingress.rules]]\nhostname = \"a.example\"\npath = \"/api\"\nendpoint = \"{b}\"\n\
             [[ingress.rules]]\nhostname = \"a.example\"\npath = \"/api/v2/\"\nendpoint = \"{c}\"\n"
        ),
    );
    let _agents = [
        agent(&server, &[&format!("rtcp://:0/{origin_a}")], &a, "", 1),
        agent(&server, &[&format!("rtcp://:0/{origin_b}")], &b, "", 2),
        agent(&server, &[&format!("rtcp://:0/{origin_c}")], &c, "", 3),
    ];
    let ep = server.entrypoints[0];
    for (path, name, origin_path) in [
        ("/", "A", "/"),
        ("/apix", "A", "/apix"),
        ("/api", "B", "/api"),
        ("/api/v1/users?x=1", "B", "/api/v1/users?x=1"),
        ("/api/v2", "C", "/api/v2"),
        ("/api/v2/users", "C", "/api/v2/users"),
        // The path is routed, and sent on, as the origin would read it.
        ("/public/../api/v2/users", "C", "/api/v2/users"),
        ("//api//v2/x", "C", "/api/v2/x"),
        ("/%61pi/v2/x", "C", "/api/v2/x"),
        ("/api/v2/%2e%2e/v1", "B", "/api/v1"),
    ] {
        let (status, body) = get(ep, "a.example", path, &[]);
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(who(&body), (name.to_owned(), origin_path.to_owned()), "{path}: {body}");
    }
    let before = seen_c.requests.load(Ordering::SeqCst);
    for path in ["/api%2Fv2/x", "/api/v2%5cx"] {
        let (status, body) = get(ep, "a.example", path, &[]);
        assert_eq!(status, 400, "an escaped slash is ambiguous: {path}: {body}");
        assert!(body.contains("ambiguous path"), "{body}");
    }
    assert_eq!(seen_c.requests.load(Ordering::SeqCst), before);
}

#[test]
fn a_path_rule_that_is_private_is_not_reached_from_the_public_entrypoint() {
    let (public, private) = (tunnel_id(), tunnel_id());
    let (origin_pub, _) = origin::http_counting("PUB");
    let (origin_priv, seen_priv) = origin::http_counting("PRIV");
    let dir = tempfile::tempdir().unwrap();
    let server = server(
        dir.path(),
        &format!(
            "[[ingress.rules]]\nhostname = \"a.example\"\nendpoint = \"{public}\"\n\
             [[ingress.rules]]\nhostname = \"a.example\"\npath = \"/internal\"\nendpoint = \"${private}\"\n"
        ),
    );
    let _a = agent(&server, &[&format!("rtcp://:0/{origin_pub}")], &public, "", 1);
    let _b = agent(&server, &[&format!("rtcp://:0/{origin_priv}")], &private, "", 2);
    let ep = server.entrypoints[0];
    assert_eq!(who(&get(ep, "a.example", "/x", &[]).1).0, "PUB");
    for path in ["/internal", "/internal/x", "/x/../internal", "/%69nternal"] {
        let (status, body) = get(ep, "a.example", path, &[]);
        assert_eq!(status, 404, "{path}: {body}");
    }
    assert_eq!(seen_priv.connections.load(Ordering::SeqCst), 0, "the private origin is never reached");
}

#[test]
fn basic_auth_answers_401_with_a_challenge_until_the_right_password_comes() {
    let id = tunnel_id();
    let (origin, seen) = origin::http_counting("A");
    let dir = tempfile::tempdir().unwrap();
    let alice = hash_password("correct horse");
    let server = server(
        dir.path(),
        &format!(
            "[[ingress.rules]]\nhostname = \"a.example\"\nendpoint = \"{id}\"\nbasicAuth = [\"alice:{alice}\"]\n\
             [[ingress.rules]]\nhostname = \"open.example\"\nendpoint = \"{id}\"\n"
        ),
    );
    let _agent = agent(&server, &[&format!("rtcp://:0/{origin}")], &id, "", 1);
    let ep = server.entrypoints[0];
    let url = format!("http://{ep}/x");
    let (code, head) = curl(&["-sS", "-o", "/dev/null", "-D", "-", "-H", "Host: a.example", &url]);
    assert_eq!(code, 0);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(head.to_ascii_lowercase().contains("www-authenticate: basic realm=\"a.example\""), "{head}");
    for wrong in [&["-u", "alice:wrong"][..], &["-u", "bob:correct horse"], &["-H", "Authorization: Bearer x"]] {
        let (status, body) = get(ep, "a.example", "/x", wrong);
        assert_eq!(status, 401, "{wrong:?}: {body}");
    }
    let two = ["-H", "Authorization: Basic YWxpY2U6Y29ycmVjdCBob3JzZQ==", "-H", "Authorization: Basic Ym9iOng="];
    assert_eq!(get(ep, "a.example", "/x", &two).0, 400, "two Authorization headers are ambiguous");
    assert_eq!(seen.requests.load(Ordering::SeqCst), 0, "nothing unauthenticated reaches the origin");
    for _ in 0..3 {
        let (status, body) = get(ep, "a.example", "/x", &["-u", "alice:correct horse"]);
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("origin=A") && body.contains("auth=none"), "the password stays at the server: {body}");
    }
    assert_eq!(get(ep, "open.example", "/x", &[]).0, 200, "a rule without basicAuth is open");
    // TLS visitors cannot authenticate: a rule with basicAuth is not passed through.
    let before = seen.connections.load(Ordering::SeqCst);
    let tls = curl(&[
        "-k",
        "--resolve",
        &format!("a.example:{}:127.0.0.1", ep.port()),
        &format!("https://a.example:{}/", ep.port()),
    ]);
    assert_ne!(tls.0, 0, "a TLS visitor of an authenticated rule is refused");
    assert_eq!(seen.connections.load(Ordering::SeqCst), before, "and never reaches the origin");
}

#[test]
fn a_bad_basic_auth_entry_is_a_config_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    let id = tunnel_id();
    std::fs::write(
        &path,
        format!("addr = \"127.0.0.1:0\"\n[[ingress.rules]]\nhostname = \"a.example\"\nendpoint = \"{id}\"\nbasicAuth = [\"alice:secret\"]\n"),
    )
    .unwrap();
    let out = Command::new(bin("tunnel-server")).args(["-C", path.to_str().unwrap(), "--check"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ingress.rules[0].basicAuth[0]") && err.contains("--hash-password"), "{err}");
    assert!(!err.contains("secret"), "the entry is not echoed: {err}");
}

#[test]
fn http2_with_prior_knowledge_routes_each_stream_by_its_authority_and_h2c_upgrade_gets_http_1_1() {
    let (a, b, private) = (tunnel_id(), tunnel_id(), tunnel_id());
    let (origin_a, _) = origin::http_counting("A");
    let (origin_b, _) = origin::http_counting("B");
    let (origin_p, seen_p) = origin::http_counting("P");
    let dir = tempfile::tempdir().unwrap();
    let server = server(
        dir.path(),
        &format!(
            "[[ingress.rules]]\nhostname = \"a.example\"\nendpoint = \"{a}\"\n\
             [[ingress.rules]]\nhostname = \"b.example\"\nendpoint = \"{b}\"\n\
             [[ingress.rules]]\nhostname = \"p.example\"\nendpoint = \"${private}\"\n"
        ),
    );
    let _agents = [
        agent(&server, &[&format!("rtcp://:0/{origin_a}")], &a, "", 1),
        agent(&server, &[&format!("rtcp://:0/{origin_b}")], &b, "", 2),
        agent(&server, &[&format!("rtcp://:0/{origin_p}")], &private, "", 3),
    ];
    let ep = server.entrypoints[0];
    let versioned = |host: &str, path: &str, how: &str| {
        let url = format!("http://{ep}{path}");
        let (code, out) =
            curl(&[how, "-w", "status=%{http_code} version=%{http_version}", "-H", &format!("Host: {host}"), &url]);
        assert_eq!(code, 0, "{how}: {out}");
        out
    };
    let out = versioned("a.example", "/h2", "--http2-prior-knowledge");
    assert!(out.contains("origin=A host=a.example path=/h2") && out.ends_with("status=200 version=2"), "{out}");
    let out = versioned("b.example", "/up", "--http2");
    assert!(out.contains("origin=B host=b.example path=/up") && out.ends_with("status=200 version=1.1"), "{out}");

    // One HTTP/2 connection, three streams, three authorities.
    let answers = h2_requests(ep, &["a.example", "b.example", "p.example"]);
    assert_eq!(answers[0].0, 200);
    assert!(answers[0].1.contains("origin=A host=a.example"), "{answers:?}");
    assert_eq!(answers[1].0, 200);
    assert!(answers[1].1.contains("origin=B host=b.example"), "{answers:?}");
    assert_eq!(answers[2].0, 404, "a private rule is not reachable over HTTP/2 either: {answers:?}");
    assert_eq!(seen_p.connections.load(Ordering::SeqCst), 0);
}

/// Sends one GET per authority on a single HTTP/2 connection (prior knowledge), all at once.
fn h2_requests(ep: SocketAddr, authorities: &[&str]) -> Vec<(u16, String)> {
    use http_body_util::{BodyExt, Empty};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(ep).await.unwrap();
        let (sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .expect("HTTP/2 handshake");
        tokio::spawn(conn);
        let requests = authorities.iter().map(|authority| {
            let mut sender = sender.clone();
            let req =
                hyper::Request::get(format!("http://{authority}/stream")).body(Empty::<bytes::Bytes>::new()).unwrap();
            async move {
                let resp =
                    tokio::time::timeout(WAIT, sender.send_request(req)).await.expect("in time").expect("answer");
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await.expect("body").to_bytes();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        });
        futures::future::join_all(requests).await
    })
}

/// An origin that reads paths the way lax frameworks do (Express and IIS: any case; Tomcat
/// and Spring: `;` parameters dropped; IIS: trailing dots and spaces dropped; escapes
/// decoded) and answers `ADMIN PAGE`, `INTERNAL PAGE` or `PUBLIC PAGE` by what it read.
fn lax_origin() -> SocketAddr {
    use std::io::{BufRead, BufReader};
    let (l, addr) = tunnel_tests::listener();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/");
                let page = match lax(path) {
                    p if p == "/admin" || p.starts_with("/admin/") => "ADMIN PAGE",
                    p if p == "/internal" || p.starts_with("/internal/") => "INTERNAL PAGE",
                    _ => "PUBLIC PAGE",
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}\n",
                    page.len() + 1
                );
            });
        }
    });
    addr
}

/// A path as the lax origin reads it.
fn lax(path: &str) -> String {
    let path = path.split('?').next().unwrap_or("");
    let mut decoded = Vec::new();
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()),
        ) {
            (b'%', Some(b)) => {
                decoded.push(b);
                i += 3;
            }
            (b, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    let decoded = String::from_utf8_lossy(&decoded).to_lowercase();
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        let seg = seg.split(';').next().unwrap_or("");
        let seg = if seg == "." || seg == ".." { seg } else { seg.trim_end_matches(['.', ' ']) };
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    format!("/{}", segments.join("/"))
}

#[test]
fn protected_path_rules_cannot_be_dodged_by_case_parameters_or_trailing_characters() {
    let id = tunnel_id();
    let origin = lax_origin();
    let dir = tempfile::tempdir().unwrap();
    let alice = hash_password("correct horse");
    let server = server(
        dir.path(),
        &format!(
            "[[ingress.rules]]\nhostname = \"app.example\"\nendpoint = \"{id}\"\n\
             [[ingress.rules]]\nhostname = \"app.example\"\npath = \"/admin\"\nendpoint = \"{id}\"\nbasicAuth = [\"alice:{alice}\"]\n\
             [[ingress.rules]]\nhostname = \"app.example\"\npath = \"/internal\"\nendpoint = \"${id}\"\n"
        ),
    );
    let _agent = agent(&server, &[&format!("rtcp://:0/{origin}")], &id, "", 1);
    let ep = server.entrypoints[0];
    let (status, body) = get(ep, "app.example", "/", &[]);
    assert_eq!((status, body.trim()), (200, "PUBLIC PAGE"), "the fallback is public");
    let admin = ["/ADMIN", "/Admin", "/admin;x", "/admin%3Bx", "/x/..;/admin", "/admin.", "/admin%20", "/ADMIN/users"];
    let internal = ["/INTERNAL", "/Internal/x", "/internal;jsessionid=1", "/internal%2e", "/x/..;/internal"];
    for http2 in [false, true] {
        let version: &[&str] = if http2 { &["--http2-prior-knowledge"] } else { &[] };
        for path in admin {
            let (status, body) = get(ep, "app.example", path, version);
            assert!(!body.contains("ADMIN PAGE"), "{path} (HTTP/2 {http2}) reached the protected page: {body}");
            assert_eq!(status, 401, "{path} (HTTP/2 {http2}) is held to /admin's basicAuth: {body}");
        }
        for path in internal {
            let (status, body) = get(ep, "app.example", path, version);
            assert!(!body.contains("INTERNAL PAGE"), "{path} (HTTP/2 {http2}) reached the private page: {body}");
            assert_eq!(status, 404, "{path} (HTTP/2 {http2}) is held to the private rule: {body}");
        }
    }
    // With the password, the protected page is served, whatever spelling the origin accepts.
    let (status, body) = get(ep, "app.example", "/Admin", &["-u", "alice:correct horse"]);
    assert_eq!((status, body.trim()), (200, "ADMIN PAGE"), "the right password passes");
}

/// `curl -u USER:PASSWORD` to `host` on `ep`: (status, seconds taken).
fn login(ep: SocketAddr, host: &str, user: &str, password: &str) -> (u16, f64) {
    let started = std::time::Instant::now();
    let (status, _) = get(ep, host, "/", &["-u", &format!("{user}:{password}")]);
    (status, started.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[test]
fn one_tenants_password_flood_neither_jams_anothers_logins_nor_goes_unlimited() {
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::sync::Arc;
    let (a, b) = (tunnel_id(), tunnel_id());
    let (origin, _) = origin::http_counting("O");
    let dir = tempfile::tempdir().unwrap();
    // Tenant B has six users: each logs in once, so every login below costs a verification.
    let users: Vec<(String, String)> = (1..=6).map(|n| (format!("b{n}"), format!("pass {n}"))).collect();
    let b_users: Vec<String> = users.iter().map(|(u, p)| format!("\"{u}:{}\"", hash_password(p))).collect();
    let server = server(
        dir.path(),
        &format!(
            "[[ingress.rules]]\nhostname = \"a.example\"\nendpoint = \"{a}\"\nbasicAuth = [\"alice:{}\"]\n\
             [[ingress.rules]]\nhostname = \"b.example\"\nendpoint = \"{b}\"\nbasicAuth = [{}]\n",
            hash_password("alice's"),
            b_users.join(", ")
        ),
    );
    let _agents = [
        agent(&server, &[&format!("rtcp://:0/{origin}")], &a, "", 1),
        agent(&server, &[&format!("rtcp://:0/{origin}")], &b, "", 2),
    ];
    let ep = server.entrypoints[0];
    // B's logins alone.
    let alone: Vec<f64> = users[..3]
        .iter()
        .map(|(u, p)| login(ep, "b.example", u, p))
        .map(|(s, t)| {
            assert_eq!(s, 200);
            t
        })
        .collect();
    // A flood of wrong passwords at A's rule from 80 addresses, 10 guesses each at once.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (1..=80)
        .map(|n| {
            let (stop, answered) = (stop.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) && i < 10_000 {
                    i += 1;
                    let Ok(socket) = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None) else {
                        continue;
                    };
                    let from: SocketAddr = format!("127.3.0.{n}:0").parse().unwrap();
                    if socket.bind(&from.into()).is_err() || socket.connect(&ep.into()).is_err() {
                        continue;
                    }
                    let mut tcp: std::net::TcpStream = socket.into();
                    let header = format!("alice:wrong {n} {i}");
                    let request = format!(
                        "GET / HTTP/1.1\r\nHost: a.example\r\nAuthorization: Basic {}\r\nConnection: close\r\n\r\n",
                        base64_of(&header)
                    );
                    let _ = tcp.write_all(request.as_bytes());
                    let mut answer = Vec::new();
                    let _ = std::io::Read::read_to_end(&mut tcp, &mut answer);
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tunnel_tests::poll_until("the flood under way", || answered.load(Ordering::Relaxed) >= 40);
    let flooded: Vec<f64> = users[3..]
        .iter()
        .map(|(u, p)| login(ep, "b.example", u, p))
        .map(|(s, t)| {
            assert_eq!(s, 200, "tenant B's login during tenant A's flood");
            t
        })
        .collect();
    stop.store(true, Ordering::Relaxed);
    for t in flood {
        t.join().unwrap();
    }
    let (alone, flooded) = (median(alone), median(flooded));
    eprintln!(
        "measured: tenant B's login {:.1} ms alone, {:.1} ms during A's flood (x{:.2})",
        alone * 1e3,
        flooded * 1e3,
        flooded / alone
    );
    assert!(flooded < alone * 20.0 + 0.5, "B waited for A's flood: {flooded:.3} s against {alone:.3} s");
    // A guesser at A's rule: 10 guesses, then 429 with Retry-After.
    for n in 0..10 {
        assert_eq!(login(ep, "a.example", "alice", &format!("guess {n}")).0, 401);
    }
    let (code, out) = curl(&["-s", "-i", "-u", "alice:guess", "-H", "Host: a.example", &format!("http://{ep}/")]);
    assert_eq!(code, 0);
    assert!(out.starts_with("HTTP/1.1 429"), "{out}");
    assert!(out.to_ascii_lowercase().contains("retry-after:"), "{out}");
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
