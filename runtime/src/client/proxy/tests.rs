use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

#[test]
fn urls() {
    let p = Proxy::parse("http://alice:s3cret@127.0.0.1:3128", None).unwrap();
    assert_eq!((p.kind, p.addr.as_str()), (ProxyKind::Http, "127.0.0.1:3128"));
    assert_eq!(p.auth.as_ref().map(|(u, s)| (u.as_str(), s.expose())), Some(("alice", "s3cret")));
    assert!(!format!("{p:?}").contains("s3cret"), "{p:?}");
    assert_eq!(p.describe(), "http://127.0.0.1:3128");
    let p = Proxy::parse("socks5://:1080", None).unwrap();
    assert_eq!((p.kind, p.addr.as_str(), p.auth.is_none()), (ProxyKind::Socks5, "127.0.0.1:1080", true));
    let p = Proxy::parse("socks5h://bob@proxy.lan:1080", None).unwrap();
    assert_eq!(p.auth.as_ref().map(|(u, s)| (u.as_str(), s.expose())), Some(("bob", "")));
    for (bad, says) in [
        ("https://proxy:3128", "unsupported proxy scheme"),
        ("http://proxy", "no :port"),
        ("http://proxy:3128/path", "no path"),
        ("http://:pw@proxy:3128", "needs a user name"),
        ("socks5://proxy:1080?x=1", "unknown option"),
    ] {
        let err = Proxy::parse(bad, None).unwrap_err();
        assert!(err.contains(says), "{bad}: {err}");
        assert!(!err.contains("pw@"), "the password is not shown: {err}");
    }
    let err = Proxy::parse("http://u:pw@proxy:3128", Some("/nonexistent")).unwrap_err();
    assert!(err.contains("not both"), "{err}");
}

#[test]
fn the_password_from_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy-password");
    std::fs::write(&path, "from-file\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let p = Proxy::parse("http://alice@127.0.0.1:3128", path.to_str()).unwrap();
    assert_eq!(p.auth.as_ref().map(|(_, s)| s.expose()), Some("from-file"));
}

/// A fake proxy that reads the client's request, answers `reply`, and returns what it read.
async fn one_shot(reply: Vec<u8>, read_until: &'static [u8]) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (mut conn, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(read_until) {
            let n = conn.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        conn.write_all(&reply).await.unwrap();
        let _ = conn.read(&mut buf).await;
        got
    });
    (addr, task)
}

#[tokio::test]
async fn http_connect_names_the_server_and_keeps_its_first_bytes() {
    let (addr, task) = one_shot(b"HTTP/1.1 200 Connection established\r\n\r\nSERVER-BYTES".to_vec(), b"\r\n\r\n").await;
    let p = Proxy::parse(&format!("http://alice:s3cret@{addr}"), None).unwrap();
    let mut tcp = p.connect("relay.example:8443").await.unwrap();
    let mut first = [0u8; 12];
    tcp.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"SERVER-BYTES", "bytes after the head are the session's");
    drop(tcp);
    let request = String::from_utf8(task.await.unwrap()).unwrap();
    assert!(request.starts_with("CONNECT relay.example:8443 HTTP/1.1\r\n"), "the proxy resolves the name: {request}");
    assert!(request.contains("Proxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n"), "{request}");
}

#[tokio::test]
async fn http_connect_refusals_say_the_status() {
    let (addr, _task) =
        one_shot(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n".to_vec(), b"\r\n\r\n")
            .await;
    let p = Proxy::parse(&format!("http://alice:pa55word@{addr}"), None).unwrap();
    let err = p.connect("relay.example:8443").await.unwrap_err().to_string();
    assert!(err.contains("407 Proxy Authentication Required") && err.contains("credentials"), "{err}");
    assert!(!err.contains("pa55word"), "{err}");

    let (addr, _task) = one_shot(vec![b'x'; MAX_RESPONSE_HEAD + 10], b"\r\n\r\n").await;
    let err = Proxy::parse(&format!("http://{addr}"), None).unwrap().connect("r:1").await.unwrap_err().to_string();
    assert!(err.contains("over 8192 bytes"), "{err}");

    let (addr, _task) = one_shot(b"SSH-2.0-OpenSSH\r\n\r\n".to_vec(), b"\r\n\r\n").await;
    let err = Proxy::parse(&format!("http://{addr}"), None).unwrap().connect("r:1").await.unwrap_err().to_string();
    assert!(err.contains("not HTTP"), "{err}");
}

#[tokio::test]
async fn socks5_sends_the_name_as_a_domain_address() {
    // Greeting (no auth chosen), then the CONNECT request, answered with success.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut conn, _) = l.accept().await.unwrap();
        let mut greeting = [0u8; 3];
        conn.read_exact(&mut greeting).await.unwrap();
        conn.write_all(&[5, 0]).await.unwrap();
        let mut head = [0u8; 5];
        conn.read_exact(&mut head).await.unwrap();
        let mut name = vec![0u8; head[4] as usize + 2];
        conn.read_exact(&mut name).await.unwrap();
        conn.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 80]).await.unwrap();
        (head, name)
    });
    let p = Proxy::parse(&format!("socks5://{addr}"), None).unwrap();
    p.connect("relay.example:8443").await.unwrap();
    let (head, name) = task.await.unwrap();
    assert_eq!(&head[..4], &[5, 1, 0, 3], "CONNECT with address type 3: a domain name");
    assert_eq!(&name[..name.len() - 2], b"relay.example");
    assert_eq!(&name[name.len() - 2..], &8443u16.to_be_bytes());
}
