use super::*;

const RELAY: &str = "relay://:8443?tunnel.id=4d21094e-b74c-4916-86c1-d9fa36ea677b";

fn from_url(l: &str) -> Result<Config, ConfigError> {
    FileConfig::from_urls(&[l.into()], RELAY)?.validate("-L")
}

fn from_toml(services: &str) -> Result<Config, ConfigError> {
    let text = format!("[relay]\naddr = \":8443\"\ntunnelID = \"4d21094e-b74c-4916-86c1-d9fa36ea677b\"\n{services}");
    toml::from_str::<FileConfig>(&text).unwrap().validate("agent.toml")
}

#[test]
fn the_seed_selector_on_a_command_line() {
    let cfg = from_url("rtcp://:0/:81,:82?strategy=fifo&maxFails=3&failTimeout=30s&proxyProtocol=2").unwrap();
    assert_eq!(cfg.targets.len(), 2);
    let want = Selector { strategy: Strategy::Fifo, max_fails: 3, fail_timeout: Duration::from_secs(30) };
    assert!(cfg.targets.iter().all(|t| t.selector == want && t.proxy_protocol == Some(ProxyVersion::V2)));
    let cfg = from_url("rtcp://:0/:81").unwrap();
    assert_eq!(cfg.targets[0].selector, Selector::default());
    assert_eq!(cfg.targets[0].selector.fail_timeout, Duration::from_secs(10));
    let err = from_url("rtcp://:0/:81?strategy=weighted").unwrap_err().to_string();
    assert!(err.contains("selector.strategy") && err.contains("weighted"), "{err}");
    let err = from_url("rtcp://:0/:81?maxFails=0").unwrap_err().to_string();
    assert!(err.contains("selector.maxFails") && err.contains("at least 1"), "{err}");
    let err = from_url("rtcp://:0/:81?proxyProtocol=3").unwrap_err().to_string();
    assert!(err.contains("proxyProtocol") && err.contains("1 or 2"), "{err}");
    let err = from_url("rudp://:0/:53?proxyProtocol=1").unwrap_err().to_string();
    assert!(err.contains("proxyProtocol"), "a UDP service does not take it: {err}");
}

#[test]
fn a_group_has_one_strategy() {
    let cfg = from_toml(
        "[[services]]\ntype = \"rtcp\"\n[services.forwarder.selector]\nstrategy = \"hash\"\nmaxFails = 2\nfailTimeout = \"1m\"\n\
         [[services.forwarder.nodes]]\naddr = \":81\"\nhost = \"app.example\"\nproxyProtocol = 1\n",
    )
    .unwrap();
    assert_eq!(cfg.targets[0].selector.strategy, Strategy::Hash);
    assert_eq!(cfg.targets[0].proxy_protocol, Some(ProxyVersion::V1));
    let err = from_toml(
        "[[services]]\ntype = \"rtcp\"\n[[services.forwarder.nodes]]\naddr = \":81\"\n\
         [[services]]\ntype = \"rtcp\"\n[services.forwarder.selector]\nstrategy = \"fifo\"\n\
         [[services.forwarder.nodes]]\naddr = \":82\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("services[1].forwarder.selector.strategy") && err.contains("one group"), "{err}");
    let err =
        from_toml("[[services]]\ntype = \"rudp\"\n[[services.forwarder.nodes]]\naddr = \":53\"\nproxyProtocol = 2\n")
            .unwrap_err()
            .to_string();
    assert!(err.contains("nodes[0].proxyProtocol") && err.contains("TCP"), "{err}");
}

#[test]
fn health_checks() {
    let cfg = from_url("rtcp://:0/:81?healthCheck=/healthz&healthCheckInterval=3s").unwrap();
    let check = cfg.targets[0].health_check.clone().unwrap();
    assert_eq!(check.probe, crate::target::Probe::Http("/healthz".into()));
    assert_eq!((check.interval, check.timeout), (Duration::from_secs(3), crate::target::DEFAULT_TIMEOUT));
    assert!(from_url("rtcp://:0/:81").unwrap().targets[0].health_check.is_none());
    let err = from_url("rtcp://:0/:81?healthCheck=ping").unwrap_err().to_string();
    assert!(err.contains("nodes[0].healthCheck") && err.contains("ping"), "{err}");
    let err = from_url("rtcp://:0/:81?healthCheckTimeout=1s").unwrap_err().to_string();
    assert!(err.contains("need a healthCheck"), "{err}");
    let err = from_url("rtcp://:0/:81?healthCheck=tcp&healthCheckInterval=0s").unwrap_err().to_string();
    assert!(err.contains("healthCheckInterval"), "{err}");
    let err = from_url("rudp://:0/:53?healthCheck=tcp").unwrap_err().to_string();
    assert!(err.contains("only TCP"), "{err}");
}
