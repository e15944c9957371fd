//! Credentials of the HTTP routes that need them (pushes, drains, the
//! expositions): bearer tokens and basic-auth users whose password is
//! given plain or as a bcrypt hash. Plain secrets are compared in constant
//! time; a bcrypt check (tens of milliseconds of CPU) runs off the
//! runtime, one per core at most, and a credential that passed is
//! remembered so that a client pays it once. Failures are throttled per
//! client address (see [`AuthThrottle`]), so a brute force from one
//! address never slows a legitimate client from another.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use parking_lot::Mutex;
use subtle::ConstantTimeEq;

use crate::auth_throttle::AuthThrottle;

/// Credentials that passed a bcrypt check, remembered at most; past it the
/// memory is cleared (and each pusher pays one check again).
const MAX_REMEMBERED: usize = 1024;

/// A basic-auth password.
#[derive(Clone)]
enum Password {
    Plain(Vec<u8>),
    Bcrypt(String),
}

/// Who may use a route.
#[derive(Clone, Default)]
pub(crate) struct Credentials {
    tokens: Vec<Vec<u8>>,
    users: Vec<(String, Password)>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("tokens", &self.tokens.len())
            .field(
                "users",
                &self
                    .users
                    .iter()
                    .map(|(u, _)| u.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Credentials {
    /// From bearer tokens and `USER:PASSWORD` values (a password starting
    /// `$2a$`, `$2b$` or `$2y$` is a bcrypt hash).
    pub(crate) fn new(tokens: &[String], users: &[String]) -> Result<Credentials, String> {
        let mut credentials = Credentials::default();
        for token in tokens {
            if token.is_empty() {
                return Err("a token must not be empty".to_owned());
            }
            credentials.tokens.push(token.as_bytes().to_vec());
        }
        for user in users {
            let Some((name, password)) = user.split_once(':') else {
                return Err(format!(
                    "{:?} is not USER:PASSWORD (or USER:BCRYPT-HASH)",
                    user.chars().take(32).collect::<String>()
                ));
            };
            credentials.add_user(name, password)?;
        }
        Ok(credentials)
    }

    /// One basic-auth user `name` with `password` (plain, or a bcrypt hash).
    pub(crate) fn user(name: &str, password: &str) -> Result<Credentials, String> {
        let mut credentials = Credentials::default();
        credentials.add_user(name, password)?;
        Ok(credentials)
    }

    fn add_user(&mut self, name: &str, password: &str) -> Result<(), String> {
        if name.is_empty() || password.is_empty() {
            return Err("basic auth needs a user and a password".to_owned());
        }
        let password = if ["$2a$", "$2b$", "$2y$"]
            .iter()
            .any(|p| password.starts_with(p))
        {
            // A hash that does not parse is refused now, not at the first
            // request.
            bcrypt::verify("", password)
                .map_err(|e| format!("the bcrypt hash of user {name:?} is invalid: {e}"))?;
            Password::Bcrypt(password.to_owned())
        } else {
            Password::Plain(password.as_bytes().to_vec())
        };
        self.users.push((name.to_owned(), password));
        Ok(())
    }

    /// Whether pushes need credentials.
    pub(crate) fn required(&self) -> bool {
        !self.tokens.is_empty() || !self.users.is_empty()
    }
}

/// Why a request was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// Missing or wrong credentials (401).
    Unauthorized,
    /// Too many failures from this address lately (429).
    Throttled,
    /// As many bcrypt checks running as there are cores (429).
    Busy,
}

impl Denied {
    /// What to tell the client.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Denied::Unauthorized => {
                "this route needs credentials: send basic auth (or Authorization: Bearer <token> where tokens are configured)"
            }
            Denied::Throttled => {
                "too many failed credentials from this address: wait, then retry with the right ones"
            }
            Denied::Busy => "the gateway is checking as many passwords as it has cores: retry",
        }
    }
}

/// The check of one set of routes: its credentials, its throttle.
#[derive(Debug)]
pub(crate) struct Guard {
    /// What the routes are, for the log (`push`, `drain`, `metrics`).
    what: &'static str,
    credentials: Credentials,
    throttle: AuthThrottle,
    /// `Authorization` values that passed a bcrypt check. Short sections.
    remembered: Mutex<HashSet<Vec<u8>>>,
    /// One bcrypt check per core at once.
    bcrypt_slots: Arc<tokio::sync::Semaphore>,
}

impl Guard {
    pub(crate) fn new(what: &'static str, credentials: Credentials) -> Guard {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Guard {
            what,
            credentials,
            throttle: AuthThrottle::default(),
            remembered: Mutex::new(HashSet::new()),
            bcrypt_slots: Arc::new(tokio::sync::Semaphore::new(cores)),
        }
    }

    /// Checks the credentials of `request`: its `Authorization` header,
    /// from the peer address the server recorded. Nothing of the request
    /// is held across the check (a body is not `Sync`).
    pub(crate) fn check_request(
        &self,
        request: &axum::extract::Request,
    ) -> impl Future<Output = Result<(), Denied>> + Send + '_ {
        let peer = request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|axum::extract::ConnectInfo(addr)| addr.ip());
        // A header value is shared bytes: cloning it copies nothing.
        let authorization = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .cloned();
        async move {
            self.check(
                authorization
                    .as_ref()
                    .map(axum::http::HeaderValue::as_bytes),
                peer,
            )
            .await
        }
    }

    /// Checks the `Authorization` header of a request from `peer`.
    pub(crate) async fn check(
        &self,
        authorization: Option<&[u8]>,
        peer: Option<IpAddr>,
    ) -> Result<(), Denied> {
        if !self.credentials.required() {
            return Ok(());
        }
        let now = Instant::now();
        if let Some(peer) = peer
            && !self.throttle.allows(peer, now)
        {
            return Err(Denied::Throttled);
        }
        let (passed, charged) = match authorization {
            Some(value) => self.matches(value, peer, now).await?,
            None => (false, false),
        };
        if passed {
            return Ok(());
        }
        if let Some(peer) = peer.filter(|_| !charged) {
            self.throttle.failed(peer, now);
        }
        if let Some(suppressed) = self.throttle.should_log(now) {
            tracing::warn!(
                routes = self.what,
                peer = ?peer,
                suppressed,
                "request refused: missing or wrong credentials"
            );
        }
        Err(Denied::Unauthorized)
    }

    /// Whether `value` holds good credentials, and whether the attempt was
    /// already charged to `peer`'s throttle (a bcrypt check is charged
    /// before it runs, so that a check cut short still counts).
    async fn matches(
        &self,
        value: &[u8],
        peer: Option<IpAddr>,
        now: Instant,
    ) -> Result<(bool, bool), Denied> {
        if let Some(token) = strip_scheme(value, b"bearer ") {
            // Every token compared, in constant time each.
            let found = self.credentials.tokens.iter().fold(false, |found, t| {
                found | bool::from(t.as_slice().ct_eq(token))
            });
            return Ok((found, false));
        }
        let Some(encoded) = strip_scheme(value, b"basic ") else {
            return Ok((false, false));
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim_ascii())
        else {
            return Ok((false, false));
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return Ok((false, false));
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let mut plain_match = false;
        let mut hash: Option<String> = None;
        for (name, stored) in &self.credentials.users {
            let same_user = bool::from(name.as_bytes().ct_eq(user));
            match stored {
                Password::Plain(stored) => {
                    plain_match |= same_user & bool::from(stored.as_slice().ct_eq(password));
                }
                Password::Bcrypt(stored) if same_user => hash = Some(stored.clone()),
                Password::Bcrypt(_) => {}
            }
        }
        if plain_match {
            return Ok((true, false));
        }
        let Some(hash) = hash else {
            return Ok((false, false));
        };
        if self.remembered.lock().contains(value) {
            return Ok((true, false));
        }
        // One check per core at most, from all addresses together: past it
        // the request is turned away rather than queued.
        let Ok(slot) = Arc::clone(&self.bcrypt_slots).try_acquire_owned() else {
            return Err(Denied::Busy);
        };
        if let Some(peer) = peer {
            self.throttle.failed(peer, now);
        }
        let password = password.to_vec();
        // The slot goes with the check, which runs to its end even if the
        // request goes away.
        let verified = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            bcrypt::verify(&password, &hash)
        })
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false);
        if verified {
            let mut remembered = self.remembered.lock();
            if remembered.len() >= MAX_REMEMBERED {
                remembered.clear();
            }
            remembered.insert(value.to_vec());
        }
        Ok((verified, true))
    }
}

/// The rest of `value` after an authentication scheme, case-insensitive.
fn strip_scheme<'a>(value: &'a [u8], scheme: &[u8]) -> Option<&'a [u8]> {
    (value.len() > scheme.len() && value[..scheme.len()].eq_ignore_ascii_case(scheme))
        .then(|| &value[scheme.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> Vec<u8> {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {encoded}").into_bytes()
    }

    #[tokio::test]
    async fn tokens_plain_and_bcrypt_passwords_pass_and_nothing_else() {
        let hash = bcrypt::hash("s3cret", 4).expect("as the test set it up");
        let credentials = Credentials::new(
            &["tok".to_owned()],
            &["ci:plain".to_owned(), format!("ops:{hash}")],
        )
        .expect("as the test set it up");
        let auth = Guard::new("push", credentials);
        let peer = Some(IpAddr::from([127, 0, 0, 1]));
        for good in [
            b"Bearer tok".to_vec(),
            b"bearer tok".to_vec(),
            basic("ci", "plain"),
            basic("ops", "s3cret"),
            basic("ops", "s3cret"),
        ] {
            assert_eq!(auth.check(Some(&good), peer).await, Ok(()), "{good:?}");
        }
        for bad in [
            b"Bearer nope".to_vec(),
            basic("ci", "wrong"),
            basic("ops", "plain"),
            basic("nobody", "s3cret"),
            b"Basic !!!".to_vec(),
        ] {
            let refused = auth.check(Some(&bad), peer).await.expect_err("refused");
            assert_eq!(refused, Denied::Unauthorized, "{bad:?}");
        }
        assert_eq!(
            auth.check(None, peer).await.expect_err("refused"),
            Denied::Unauthorized
        );
    }

    #[tokio::test]
    async fn a_brute_force_is_throttled_per_address() {
        let auth = Guard::new(
            "push",
            Credentials::new(&["tok".to_owned()], &[]).expect("as the test set it up"),
        );
        let attacker = Some(IpAddr::from([127, 0, 0, 9]));
        let mut throttled = false;
        for _ in 0..50 {
            if auth
                .check(Some(b"Bearer x"), attacker)
                .await
                .expect_err("refused")
                == Denied::Throttled
            {
                throttled = true;
                break;
            }
        }
        assert!(throttled);
        let other = Some(IpAddr::from([127, 0, 0, 10]));
        assert_eq!(auth.check(Some(b"Bearer tok"), other).await, Ok(()));
    }

    #[test]
    fn bad_settings_are_refused_up_front() {
        assert!(Credentials::new(&[String::new()], &[]).is_err());
        assert!(Credentials::new(&[], &["nocolon".to_owned()]).is_err());
        assert!(Credentials::new(&[], &["u:$2b$nothash".to_owned()]).is_err());
        assert!(
            !Credentials::new(&[], &[])
                .expect("as the test set it up")
                .required()
        );
    }
}
