//! Certificates ordered from an ACME CA (RFC 8555) with instant-acme: the account and the
//! certificates kept in `stateDir/acme` (0600), names from the ingress rules only, one order
//! per name at a time, renewal at two thirds of the lifetime (with jitter), retries with
//! backoff, and the three challenges: HTTP-01 tokens answered by the HTTP entrypoint,
//! TLS-ALPN-01 certificates shown by the HTTPS entrypoint, DNS-01 records set by the
//! operator's hook.
//!
//! instant-acme is used rather than rustls-acme because the server owns its listeners and
//! its certificate store (files and ordered certificates side by side, a challenge answered
//! on whichever entrypoint the CA calls), and needs DNS-01 and external account binding:
//! instant-acme is the protocol alone, rustls-acme a whole acceptor with TLS-ALPN-01 only.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, ExternalAccountKey, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::certs::{Certificate, Store};
use super::config::{AcmeConfig, Challenge};

/// The first wait after a failed order; doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(60);
/// The longest wait between two tries of a failing name.
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);
/// How long an order may take, validation included.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a replica of a cluster looks for certificates another one ordered.
const SYNC_INTERVAL: Duration = Duration::from_secs(5);
/// How long a replica may hold a name's order lock.
const LOCK_LEASE: Duration = Duration::from_secs(180);
/// How long a replica waits before looking again at a name another one is ordering.
const LOCKED_RETRY: Duration = Duration::from_secs(5);
/// How long a challenge answer stays in the cluster's Redis.
const CHALLENGE_TTL: Duration = Duration::from_secs(600);
/// How long a visitor's first handshake waits for its on-demand certificate.
pub const ON_DEMAND_WAIT: Duration = Duration::from_secs(60);

/// A name to keep a certificate for, and how to prove it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Wanted {
    /// The name the certificate is kept under: a host, or `*.example.com`.
    pub name: String,
    /// The identifiers of the order (`example.com` and `*.example.com` for a `.example.com`
    /// rule with a DNS hook).
    pub identifiers: Vec<String>,
    /// The challenge.
    pub challenge: Challenge,
}

/// What went on with a name's orders.
#[derive(Debug, Clone, Default)]
struct NameState {
    /// Failures in a row.
    failures: u32,
    /// No new try before.
    retry_at: Option<Instant>,
    /// The CA's last reason, logged once.
    last_error: Option<String>,
    /// When to renew the certificate in force (two thirds of its lifetime, less jitter).
    renew_at: Option<SystemTime>,
    /// Renew now, whatever the certificate's age.
    forced: bool,
}

/// The ACME side of the edge.
pub struct Acme {
    config: AcmeConfig,
    store: Arc<Store>,
    /// The challenge of names whose rule names none.
    default_challenge: Challenge,
    account: tokio::sync::OnceCell<Account>,
    /// HTTP-01: key authorizations by token.
    tokens: Mutex<HashMap<String, String>>,
    /// One order per name at a time.
    ordering: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    states: Mutex<HashMap<String, NameState>>,
    /// Wakes the scheduler (a reload, a forced renewal).
    wake: tokio::sync::Notify,
    on_demand_total: DefaultDirectRateLimiter,
    on_demand_domain: DefaultKeyedRateLimiter<String>,
    /// In a cluster: the account, the certificates, the challenge answers and the order locks
    /// the replicas share.
    shared: Option<super::shared::SharedStore>,
    /// Orders by result: `valid`, `invalid` (the CA refused), `error` (it could not be asked).
    pub orders: prometheus_client::metrics::family::Family<
        crate::metrics::Outcome,
        prometheus_client::metrics::counter::Counter,
    >,
}

/// The account as kept on disk: its directory, so that another CA makes a new one.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

fn per_hour(n: u32) -> Quota {
    let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(Duration::from_secs(3600) / n.get()).unwrap_or_else(|| Quota::per_hour(n)).allow_burst(n)
}

impl Acme {
    /// The ACME side, with the certificates kept from an earlier run put in `store`.
    pub fn new(
        config: AcmeConfig,
        store: Arc<Store>,
        https_entrypoint: bool,
        shared: Option<super::shared::SharedStore>,
    ) -> Result<Acme, String> {
        let default_challenge = config.challenge.unwrap_or(match https_entrypoint {
            true => Challenge::TlsAlpn01,
            false => Challenge::Http01,
        });
        let certs = config.state_dir.join("certs");
        private_dir(&config.state_dir)?;
        private_dir(&certs)?;
        let acme = Acme {
            on_demand_total: governor::RateLimiter::direct(per_hour(config.on_demand_total)),
            on_demand_domain: governor::RateLimiter::keyed(per_hour(config.on_demand_per_domain)),
            config,
            store,
            default_challenge,
            account: tokio::sync::OnceCell::new(),
            tokens: Mutex::default(),
            ordering: Mutex::default(),
            states: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            shared,
            orders: Default::default(),
        };
        acme.load_stored(&certs);
        Ok(acme)
    }

    /// The challenge for a name whose rule names `rule` (or none).
    pub fn challenge_for(&self, rule: Option<Challenge>, wildcard: bool) -> Challenge {
        match wildcard {
            true => Challenge::Dns01,
            false => rule.unwrap_or(self.default_challenge),
        }
    }

    /// Whether wildcard rules get wildcard certificates (DNS-01 through the hook); without a
    /// hook their hosts get certificates of their own on demand.
    pub fn wildcards(&self) -> bool {
        self.config.dns_hook.is_some()
    }

    /// The key authorization of an HTTP-01 `token`, if one is being validated here or, in a
    /// cluster, by another replica.
    pub async fn http_token(&self, token: &str) -> Option<String> {
        if let Some(auth) = self.tokens.lock().ok()?.get(token).cloned() {
            return Some(auth);
        }
        let plausible =
            token.len() <= 128 && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if token.is_empty() || !plausible {
            return None;
        }
        let shared = self.shared.as_ref()?;
        String::from_utf8(shared.get("http01", token).await?).ok()
    }

    /// The TLS-ALPN-01 answer for `host` that another replica of the cluster published, put
    /// in the store; whether there is one.
    pub async fn fetch_alpn_challenge(&self, host: &str) -> bool {
        let Some(shared) = &self.shared else { return false };
        let Some(digest) = shared.get("alpn", host).await else { return false };
        match alpn_certificate(host, &digest) {
            Ok(key) => {
                self.store.set_challenge(host, Some(key));
                true
            }
            Err(_) => false,
        }
    }

    /// Puts in force the certificate another replica ordered for `name`, if it is newer
    /// than the one here; whether it did.
    async fn sync_shared(&self, name: &str) -> bool {
        let Some(shared) = &self.shared else { return false };
        let Some(pem) = shared.get("cert", name).await else { return false };
        let Ok(cert) = Certificate::from_pem(&pem, &pem, "acme".into()) else {
            tracing::warn!(%name, "a shared certificate cannot be read: ignored");
            return false;
        };
        if !cert.names.iter().any(|n| n == name) {
            tracing::warn!(%name, "a shared certificate is not for its name: ignored");
            return false;
        }
        if self.store.ordered(name).is_some_and(|ours| ours.not_after >= cert.not_after) {
            return false;
        }
        tracing::info!(%name, expires_in_days = cert.expires_in() / 86400, "certificate taken from the cluster");
        self.keep(name, &pem);
        let mut states = self.states.lock().expect("acme lock");
        let state = states.entry(name.to_owned()).or_default();
        (state.failures, state.retry_at, state.last_error, state.forced) = (0, None, None, false);
        drop(states);
        self.installed(name, Arc::new(cert));
        true
    }

    /// Keeps `pem` on disk as `name`'s certificate.
    fn keep(&self, name: &str, pem: &[u8]) {
        let file = self.config.state_dir.join("certs").join(format!("{}.pem", name.replacen("*.", "_wildcard.", 1)));
        if let Err(err) = write_private(&file, pem) {
            tracing::warn!(%err, "the certificate is in force but could not be kept");
        }
    }

    /// Orders `name` again now (`POST /api/v1/certificates/renew`); false when no
    /// certificate of that name is kept.
    pub fn force_renewal(&self, name: &str) -> bool {
        if self.store.ordered(name).is_none() {
            return false;
        }
        self.states.lock().expect("acme lock").entry(name.to_owned()).or_default().forced = true;
        self.wake.notify_one();
        true
    }

    /// Looks at the names again (after a reload).
    pub fn rescan(&self) {
        self.wake.notify_one();
    }

    /// The state of each name, for the API.
    pub fn describe(&self, name: &str) -> serde_json::Value {
        let states = self.states.lock().expect("acme lock");
        let state = states.get(name).cloned().unwrap_or_default();
        serde_json::json!({
            "failures": state.failures,
            "lastError": state.last_error,
            "renewAt": state.renew_at.map(super::unix),
        })
    }

    /// Certificates kept from an earlier run: served at once, renewed when due.
    fn load_stored(&self, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(file) = path.file_name().and_then(|n| n.to_str()) else { continue };
            let Some(stem) = file.strip_suffix(".pem") else { continue };
            let name = stem.replacen("_wildcard.", "*.", 1);
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|pem| Certificate::from_pem(&pem, &pem, "acme".into()))
            {
                Ok(cert) => {
                    tracing::info!(%name, expires_in_days = cert.expires_in() / 86400, "kept certificate loaded");
                    self.installed(&name, Arc::new(cert));
                }
                Err(err) => {
                    tracing::warn!(file = %path.display(), %err, "kept certificate not loaded; it will be ordered again")
                }
            }
        }
    }

    /// Puts `cert` in force for `name` and schedules its renewal.
    fn installed(&self, name: &str, cert: Arc<Certificate>) {
        let lifetime = cert.not_after.duration_since(cert.not_before).unwrap_or_default();
        // Renewal at two thirds of the lifetime, less up to a thirtieth of it at random, so
        // that certificates ordered together are not renewed together.
        let jitter = lifetime.mul_f64(rand::random::<f64>() / 30.0);
        let renew_at = cert.not_before + lifetime * 2 / 3 - jitter;
        self.store.set_ordered(name, cert);
        let mut states = self.states.lock().expect("acme lock");
        let state = states.entry(name.to_owned()).or_default();
        state.renew_at = Some(renew_at);
    }

    /// Whether `name` needs an order now, and when to look again otherwise.
    fn due(&self, name: &str) -> Result<(), Instant> {
        let states = self.states.lock().expect("acme lock");
        let state = states.get(name);
        let now = Instant::now();
        if let Some(retry_at) = state.and_then(|s| s.retry_at) {
            if retry_at > now {
                return Err(retry_at);
            }
        }
        if state.is_some_and(|s| s.forced) || self.store.ordered(name).is_none() {
            return Ok(());
        }
        match state.and_then(|s| s.renew_at) {
            Some(at) => match at.duration_since(SystemTime::now()) {
                Ok(wait) => Err(now + wait),
                Err(_) => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Keeps every name of `wanted()` certified until `stop`: orders what is missing or due,
    /// each name on its own (a failing one waits its backoff; the others go on).
    pub async fn run(
        self: Arc<Self>,
        wanted: impl Fn() -> Vec<Wanted> + Send + 'static,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut running: HashSet<String> = HashSet::new();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        loop {
            let mut next = Instant::now() + Duration::from_secs(3600);
            let wanted = wanted();
            if self.shared.is_some() {
                // Certificates another replica ordered are taken as they come.
                for want in &wanted {
                    if !running.contains(&want.name) {
                        self.sync_shared(&want.name).await;
                    }
                }
                next = next.min(Instant::now() + SYNC_INTERVAL);
            }
            for want in wanted {
                if running.contains(&want.name) {
                    continue;
                }
                match self.due(&want.name) {
                    Ok(()) => {
                        running.insert(want.name.clone());
                        let (acme, done) = (self.clone(), done_tx.clone());
                        tokio::spawn(async move {
                            let name = want.name.clone();
                            acme.order(&want).await;
                            let _ = done.send(name);
                        });
                    }
                    Err(at) => next = next.min(at),
                }
            }
            tokio::select! {
                () = tokio::time::sleep_until(next.into()) => {}
                () = self.wake.notified() => {}
                Some(name) = done_rx.recv() => { running.remove(&name); }
                () = stop.cancelled() => return,
            }
        }
    }

    /// A certificate for `host` under wildcard rule `domain` at a visitor's first handshake,
    /// proved by `challenge`: ordered now unless the hourly budgets are spent (the visitor
    /// waits for it); whether one is in force after. It is renewed as any other.
    pub async fn on_demand(&self, host: &str, domain: &str, challenge: Challenge) -> bool {
        if self.store.ordered(host).is_some() {
            return true;
        }
        if self.due(host).is_err() {
            // A failed order waits its backoff; visitors do not hurry it.
            return false;
        }
        if !self.on_demand_allowed(domain) {
            tracing::warn!(%host, rule = %domain, "on-demand certificate not ordered: the hourly budget is spent");
            return false;
        }
        let want = Wanted { name: host.to_owned(), identifiers: vec![host.to_owned()], challenge };
        let _ = tokio::time::timeout(ON_DEMAND_WAIT, self.order(&want)).await;
        self.store.ordered(host).is_some()
    }

    /// Whether one more on-demand order fits the hourly budgets of wildcard rule `domain` and
    /// of the server (taking it when it does).
    fn on_demand_allowed(&self, domain: &str) -> bool {
        // The rule's budget first: a rule spending its own does not spend the server's.
        self.on_demand_domain.check_key(&domain.to_owned()).is_ok() && self.on_demand_total.check().is_ok()
    }

    /// Orders `want` once (unless another order of it just ended with a fresh certificate),
    /// keeps the result, and records the outcome.
    async fn order(&self, want: &Wanted) {
        let lock = {
            let mut ordering = self.ordering.lock().expect("acme lock");
            ordering.entry(want.name.clone()).or_default().clone()
        };
        let _one = lock.lock().await;
        if self.due(&want.name).is_err() {
            return;
        }
        if let Some(shared) = &self.shared {
            // Another replica may have ordered it already, or be ordering it now.
            if self.sync_shared(&want.name).await && self.due(&want.name).is_err() {
                return;
            }
            if !shared.lock(&want.name, LOCK_LEASE).await {
                tracing::debug!(name = %want.name, "another replica is ordering this certificate");
                let mut states = self.states.lock().expect("acme lock");
                states.entry(want.name.clone()).or_default().retry_at = Some(Instant::now() + LOCKED_RETRY);
                return;
            }
        }
        let started = Instant::now();
        let outcome = tokio::time::timeout(ORDER_TIMEOUT, self.try_order(want))
            .await
            .unwrap_or_else(|_| Err(Failed::Error(format!("the order took longer than {ORDER_TIMEOUT:?}"))));
        if let Some(shared) = &self.shared {
            shared.unlock(&want.name).await;
        }
        let mut states = self.states.lock().expect("acme lock");
        let state = states.entry(want.name.clone()).or_default();
        let result = match outcome {
            Ok(cert) => {
                tracing::info!(name = %want.name, challenge = %want.challenge, expires_in_days = cert.expires_in() / 86400, took_ms = started.elapsed().as_millis() as u64, "certificate ordered");
                state.failures = 0;
                state.retry_at = None;
                state.last_error = None;
                state.forced = false;
                drop(states);
                self.installed(&want.name, Arc::new(cert));
                "valid"
            }
            Err(failed) => {
                let (result, why) = match failed {
                    Failed::Refused(why) => ("invalid", why),
                    Failed::Error(why) => ("error", why),
                };
                let backoff = FIRST_BACKOFF.saturating_mul(1 << state.failures.min(10)).min(MAX_BACKOFF);
                state.failures += 1;
                state.retry_at = Some(Instant::now() + backoff);
                // The reason is logged once; the same reason again is a debug line.
                if state.last_error.as_deref() != Some(why.as_str()) {
                    tracing::warn!(name = %want.name, challenge = %want.challenge, reason = %why, retry_in_s = backoff.as_secs(), "certificate order failed; the certificate in force (if any) stays");
                } else {
                    tracing::debug!(name = %want.name, reason = %why, retry_in_s = backoff.as_secs(), "certificate order failed again");
                }
                state.last_error = Some(why);
                result
            }
        };
        self.orders.get_or_create(&crate::metrics::Outcome { result }).inc();
    }

    async fn account(&self) -> Result<&Account, Failed> {
        self.account.get_or_try_init(|| self.open_account()).await
    }

    /// The kept account for this directory, or a new one (kept, 0600).
    async fn open_account(&self) -> Result<Account, Failed> {
        let path = self.config.state_dir.join("account.json");
        let Some(shared) = &self.shared else { return self.local_account(&path).await };
        // One account for every replica of a cluster: the one in Redis, else this one's,
        // published unless another replica's came first.
        let name = hex::encode(&sha2::Sha256::digest(self.config.directory.as_bytes())[..8]);
        if shared.get("account", &name).await.is_none() {
            self.local_account(&path).await?;
            if let Ok(text) = std::fs::read(&path) {
                shared.put("account", &name, &text, None, true).await;
            }
        }
        if let Some(text) = shared.get("account", &name).await {
            if let Ok(stored) = serde_json::from_slice::<StoredAccount>(&text) {
                if stored.directory == self.config.directory {
                    let _ = write_private(&path, &text);
                }
            }
        }
        self.local_account(&path).await
    }

    /// The account kept in `path` for this directory, or a new one (kept, 0600).
    async fn local_account(&self, path: &std::path::Path) -> Result<Account, Failed> {
        let builder = || match &self.config.ca_file {
            Some(ca) => Account::builder_with_root(ca),
            None => Account::builder(),
        };
        let err = |what: &str, e: instant_acme::Error| Failed::Error(format!("{what}: {e}"));
        if let Ok(text) = std::fs::read(path) {
            match serde_json::from_slice::<StoredAccount>(&text) {
                Ok(stored) if stored.directory == self.config.directory => {
                    let builder = builder().map_err(|e| err("the ACME client cannot start", e))?;
                    return builder
                        .from_credentials(stored.credentials)
                        .await
                        .map_err(|e| err("the kept ACME account cannot be used", e));
                }
                Ok(_) => tracing::info!("the kept ACME account is of another directory; making a new one"),
                Err(e) => {
                    tracing::warn!(file = %path.display(), err = %e, "the kept ACME account cannot be read; making a new one")
                }
            }
        }
        let contact: Vec<&str> = self.config.contact.iter().map(String::as_str).collect();
        let eab = match &self.config.eab {
            Some((kid, hmac)) => {
                use base64::Engine;
                let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(hmac.expose().trim_end_matches('='))
                    .map_err(|e| Failed::Error(format!("acme.eabHmacKey is not base64url: {e}")))?;
                Some(ExternalAccountKey::new(kid.clone(), &key))
            }
            None => None,
        };
        let new = NewAccount { contact: &contact, terms_of_service_agreed: true, only_return_existing: false };
        let (account, credentials) = builder()
            .map_err(|e| err("the ACME client cannot start", e))?
            .create(&new, self.config.directory.clone(), eab.as_ref())
            .await
            .map_err(|e| err("the ACME account cannot be made", e))?;
        let stored = StoredAccount { directory: self.config.directory.clone(), credentials };
        let text = serde_json::to_vec_pretty(&stored).map_err(|e| Failed::Error(e.to_string()))?;
        write_private(path, &text).map_err(Failed::Error)?;
        tracing::info!(directory = %self.config.directory, "ACME account made");
        Ok(account)
    }

    /// One order, start to end; challenge answers are taken away whatever the end.
    async fn try_order(&self, want: &Wanted) -> Result<Certificate, Failed> {
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = want.identifiers.iter().map(|n| Identifier::Dns(n.clone())).collect();
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await.map_err(Failed::from_acme)?;
        let mut cleanup = Cleanup { acme: self, tokens: Vec::new(), alpn: Vec::new(), txt: Vec::new() };
        let kind = match want.challenge {
            Challenge::Http01 => ChallengeType::Http01,
            Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            Challenge::Dns01 => ChallengeType::Dns01,
        };
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(Failed::from_acme)?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(Failed::Refused(format!("the authorization is {other:?}"))),
            }
            let mut challenge = authz
                .challenge(kind.clone())
                .ok_or_else(|| Failed::Refused(format!("the CA offers no {} challenge", want.challenge)))?;
            let host = challenge.identifier().identifier.clone();
            let Identifier::Dns(host) = host else { return Err(Failed::Error("not a DNS identifier".into())) };
            let auth = challenge.key_authorization();
            match want.challenge {
                Challenge::Http01 => {
                    let token = challenge.token.clone();
                    self.tokens.lock().expect("acme lock").insert(token.clone(), auth.as_str().to_owned());
                    if let Some(shared) = &self.shared {
                        shared.put("http01", &token, auth.as_str().as_bytes(), Some(CHALLENGE_TTL), false).await;
                    }
                    cleanup.tokens.push(token);
                }
                Challenge::TlsAlpn01 => {
                    let key = alpn_certificate(&host, auth.digest().as_ref()).map_err(Failed::Error)?;
                    self.store.set_challenge(&host, Some(key));
                    if let Some(shared) = &self.shared {
                        shared.put("alpn", &host, auth.digest().as_ref(), Some(CHALLENGE_TTL), false).await;
                    }
                    cleanup.alpn.push(host.clone());
                }
                Challenge::Dns01 => {
                    let record = format!("_acme-challenge.{}", host.trim_start_matches("*."));
                    let value = auth.dns_value();
                    self.hook("set", &record, &value).await.map_err(Failed::Error)?;
                    cleanup.txt.push((record, value));
                }
            }
            challenge.set_ready().await.map_err(Failed::from_acme)?;
        }
        if want.challenge == Challenge::Dns01 && !self.config.dns_propagation.is_zero() {
            tokio::time::sleep(self.config.dns_propagation).await;
        }
        let retries = RetryPolicy::new().initial_delay(Duration::from_millis(250)).backoff(1.5).timeout(ORDER_TIMEOUT);
        let status = order.poll_ready(&retries).await.map_err(Failed::from_acme)?;
        if status != OrderStatus::Ready {
            let mut why = Vec::new();
            let mut authorizations = order.authorizations();
            while let Some(Ok(mut authz)) = authorizations.next().await {
                if let Ok(state) = authz.refresh().await {
                    why.extend(state.challenges.iter().filter_map(|c| c.error.as_ref()).map(|p| p.to_string()));
                }
            }
            if why.is_empty() {
                why.push(format!("the order is {status:?}"));
            }
            return Err(Failed::Refused(why.join("; ")));
        }
        let key_pem = order.finalize().await.map_err(Failed::from_acme)?;
        let chain_pem = order.poll_certificate(&retries).await.map_err(Failed::from_acme)?;
        drop(cleanup);
        let mut pem = key_pem.into_bytes();
        pem.extend_from_slice(chain_pem.as_bytes());
        let cert = Certificate::from_pem(&pem, &pem, "acme".into()).map_err(Failed::Error)?;
        self.keep(&want.name, &pem);
        if let Some(shared) = &self.shared {
            shared.put("cert", &want.name, &pem, None, false).await;
        }
        Ok(cert)
    }

    /// Runs the DNS hook: `HOOK set|clear NAME VALUE`.
    async fn hook(&self, action: &str, record: &str, value: &str) -> Result<(), String> {
        let hook = self.config.dns_hook.as_ref().ok_or("dns-01 needs acme.dnsHook")?;
        let mut cmd = tokio::process::Command::new(hook);
        cmd.args([action, record, value]).kill_on_drop(true).stdin(std::process::Stdio::null());
        let out = tokio::time::timeout(self.config.dns_hook_timeout, cmd.output())
            .await
            .map_err(|_| format!("the DNS hook took longer than {:?}", self.config.dns_hook_timeout))?
            .map_err(|e| format!("the DNS hook {} cannot run: {e}", hook.display()))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: String = stderr.trim().chars().rev().take(300).collect::<Vec<_>>().into_iter().rev().collect();
            return Err(format!("the DNS hook `{action} {record}` failed ({}): {tail}", out.status));
        }
        Ok(())
    }
}

/// Why an order ended without a certificate.
enum Failed {
    /// The CA said no (a challenge failed, a name is not allowed).
    Refused(String),
    /// The CA could not be asked, or something here failed.
    Error(String),
}

impl Failed {
    fn from_acme(err: instant_acme::Error) -> Failed {
        match err {
            instant_acme::Error::Api(problem) => Failed::Refused(problem.to_string()),
            other => Failed::Error(other.to_string()),
        }
    }
}

/// Takes an order's challenge answers away when the order ends.
struct Cleanup<'a> {
    acme: &'a Acme,
    tokens: Vec<String>,
    alpn: Vec<String>,
    txt: Vec<(String, String)>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Ok(mut tokens) = self.acme.tokens.lock() {
            for token in &self.tokens {
                tokens.remove(token);
            }
        }
        for host in &self.alpn {
            self.acme.store.set_challenge(host, None);
        }
        if let Some(hook) = self.acme.config.dns_hook.clone() {
            let timeout = self.acme.config.dns_hook_timeout;
            for (record, value) in std::mem::take(&mut self.txt) {
                let hook = hook.clone();
                tokio::spawn(async move {
                    let mut cmd = tokio::process::Command::new(&hook);
                    cmd.args(["clear", &record, &value]).kill_on_drop(true).stdin(std::process::Stdio::null());
                    match tokio::time::timeout(timeout, cmd.status()).await {
                        Ok(Ok(status)) if status.success() => {}
                        _ => tracing::warn!(%record, "the DNS hook could not clear the challenge record"),
                    }
                });
            }
        }
    }
}

/// The self-signed certificate of a TLS-ALPN-01 answer: `host` and the acmeIdentifier
/// extension holding the key authorization's digest (RFC 8737).
fn alpn_certificate(host: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| e.to_string())?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&der).map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(vec![cert.der().clone()], signer)))
}

/// Makes `dir` (mode 0700) if missing.
fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) => Err(format!("cannot make {}: {e}", dir.display())),
    }
}

/// Writes `bytes` to `path` (mode 0600) through a file beside it, renamed into place.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, per_domain: u32, total: u32) -> AcmeConfig {
        AcmeConfig {
            directory: "https://127.0.0.1:1/dir".into(),
            contact: Vec::new(),
            ca_file: None,
            eab: None,
            challenge: None,
            dns_hook: None,
            dns_hook_timeout: Duration::from_secs(1),
            dns_propagation: Duration::ZERO,
            on_demand_per_domain: per_domain,
            on_demand_total: total,
            state_dir: dir.join("acme"),
        }
    }

    #[test]
    fn on_demand_orders_are_budgeted_per_rule_and_in_all() {
        let dir = tempfile::tempdir().unwrap();
        let acme = Acme::new(config(dir.path(), 2, 3), Arc::default(), true, None).unwrap();
        assert!(acme.on_demand_allowed("*.a.test") && acme.on_demand_allowed("*.a.test"));
        assert!(!acme.on_demand_allowed("*.a.test"), "the rule's two an hour are spent");
        assert!(acme.on_demand_allowed("*.b.test"));
        assert!(!acme.on_demand_allowed("*.c.test"), "the server's three an hour are spent");
        // The kept state is private.
        let mode = std::fs::metadata(dir.path().join("acme/certs")).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o077, 0);
    }

    #[test]
    fn a_kept_certificate_that_does_not_read_is_ordered_again() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("acme/certs")).unwrap();
        std::fs::write(dir.path().join("acme/certs/x.test.pem"), "garbage").unwrap();
        let store: Arc<Store> = Arc::default();
        let acme = Acme::new(config(dir.path(), 1, 1), store.clone(), false, None).unwrap();
        assert!(store.ordered("x.test").is_none());
        assert!(acme.due("x.test").is_ok(), "ordered again");
        assert_eq!(acme.challenge_for(None, false), Challenge::Http01, "no HTTPS entrypoint: HTTP-01");
        assert_eq!(acme.challenge_for(None, true), Challenge::Dns01);
    }
}
