//! OAuth 2 access tokens for Vertex AI.
//!
//! A service-account key signs a JWT (RS256; `iss` the account, `scope` cloud-platform,
//! `aud` the key's `token_uri`) that the token endpoint exchanges for an access token
//! (RFC 7523, `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`). The token is cached
//! and refreshed before it expires — five minutes before, or halfway through a short-lived
//! one — by one caller at a time while the others wait for its result (single flight). If a
//! refresh fails while the old token is still valid, the old one keeps serving.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde::Deserialize;
use tokio::time::Instant;

use crate::providers::{ProviderError, http};

/// The OAuth scope Vertex AI needs.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Where tokens come from when the key names no `token_uri`.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// The JWT bearer grant (RFC 7523), form-encoded.
const GRANT_TYPE: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";
/// How long before expiry a token is replaced (at most; see [`refresh_margin`]).
const REFRESH_BEFORE: Duration = Duration::from_secs(300);
/// How long a signed assertion is valid (Google's maximum).
const ASSERTION_LIFETIME_S: u64 = 3600;

/// The fields of a service-account key file the exchange needs.
#[derive(Deserialize)]
pub struct ServiceAccountKey {
    pub client_email: String,
    pub private_key: String,
    #[serde(default)]
    pub private_key_id: Option<String>,
    #[serde(default)]
    pub token_uri: Option<String>,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

/// Where a provider's access tokens come from.
pub enum Tokens {
    /// A token given in the configuration, used as is.
    Static(String),
    /// Exchanged from a service-account key.
    Account(Arc<Account>),
}

impl Tokens {
    /// A token source for a key file's JSON text.
    pub fn from_key_json(json: &str) -> anyhow::Result<Tokens> {
        let key: ServiceAccountKey = serde_json::from_str(json).map_err(|e| {
            anyhow::anyhow!("the service-account key is not a key file's JSON: {e}")
        })?;
        Ok(Tokens::Account(Arc::new(Account::new(key)?)))
    }

    /// The current token, refreshed first when it is due.
    pub async fn get(&self) -> Result<Arc<str>, ProviderError> {
        match self {
            Tokens::Static(token) => Ok(Arc::from(token.as_str())),
            Tokens::Account(account) => account.token().await,
        }
    }

    /// Forgets the cached token (the upstream refused it), so the next call exchanges anew.
    pub fn invalidate(&self) {
        if let Tokens::Account(account) = self
            && let Ok(mut current) = account.current.lock()
        {
            *current = None;
        }
    }
}

/// A service account, its signing key and its cached token.
pub struct Account {
    email: String,
    key_id: Option<String>,
    token_uri: String,
    signer: RsaKeyPair,
    rng: ring::rand::SystemRandom,
    client: reqwest::Client,
    current: Mutex<Option<Token>>,
    /// Held by the one caller exchanging a new token.
    refreshing: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct Token {
    value: Arc<str>,
    refresh_at: Instant,
    expires_at: Instant,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default = "default_expires_in")]
    expires_in: u64,
}

fn default_expires_in() -> u64 {
    3600
}

impl Account {
    pub fn new(key: ServiceAccountKey) -> anyhow::Result<Account> {
        http::install_tls();
        let der = pem_body(&key.private_key)
            .ok_or_else(|| anyhow::anyhow!("the service-account key's private_key is not PEM"))?;
        let signer = RsaKeyPair::from_pkcs8(&der)
            .or_else(|_| RsaKeyPair::from_der(&der))
            .map_err(|e| {
                anyhow::anyhow!("the service-account private_key is not an RSA key: {e}")
            })?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()?;
        Ok(Account {
            email: key.client_email,
            key_id: key.private_key_id,
            token_uri: key
                .token_uri
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| DEFAULT_TOKEN_URI.to_string()),
            signer,
            rng: ring::rand::SystemRandom::new(),
            client,
            current: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    fn cached(&self, usable: impl Fn(&Token) -> bool) -> Option<Arc<str>> {
        let current = self.current.lock().ok()?;
        current
            .as_ref()
            .filter(|t| usable(t))
            .map(|t| t.value.clone())
    }

    async fn token(&self) -> Result<Arc<str>, ProviderError> {
        let fresh = |t: &Token| Instant::now() < t.refresh_at;
        if let Some(token) = self.cached(fresh) {
            return Ok(token);
        }
        let _flight = self.refreshing.lock().await;
        // Whoever held the lock before may have refreshed it already.
        if let Some(token) = self.cached(fresh) {
            return Ok(token);
        }
        match self.exchange().await {
            Ok(token) => {
                let value = token.value.clone();
                if let Ok(mut current) = self.current.lock() {
                    *current = Some(token);
                }
                Ok(value)
            }
            Err(e) => {
                let valid = |t: &Token| Instant::now() < t.expires_at;
                match self.cached(valid) {
                    Some(old) => {
                        tracing::warn!(error = %e, "Vertex AI token refresh failed; the current token is still valid");
                        Ok(old)
                    }
                    None => Err(e),
                }
            }
        }
    }

    /// Signs an assertion and trades it for an access token.
    async fn exchange(&self) -> Result<Token, ProviderError> {
        let assertion = self.assertion(unix_now())?;
        let body = format!("grant_type={GRANT_TYPE}&assertion={assertion}");
        let asked = Instant::now();
        let response = self
            .client
            .post(&self.token_uri)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| ProviderError::Connect(format!("token exchange: {e}")))?;
        let status = response.status().as_u16();
        if !response.status().is_success() {
            let retry_after = http::retry_after(response.headers());
            let body = response.bytes().await.unwrap_or_default();
            let message = format!(
                "token exchange at {} refused: {}",
                self.token_uri,
                oauth_error(&body)
            );
            // A refused key is the configuration's fault, not the client's: 401, moving on
            // to other targets; an overloaded token endpoint may do better on a retry.
            let status = if status == 429 || status >= 500 {
                status
            } else {
                401
            };
            return Err(ProviderError::Status {
                status,
                message,
                retry_after,
            });
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ProviderError::Stream(format!("token exchange: {e}")))?;
        let answer: TokenAnswer = serde_json::from_slice(&bytes)
            .map_err(|e| ProviderError::Malformed(format!("token exchange answer: {e}")))?;
        let lifetime = Duration::from_secs(answer.expires_in.min(86_400));
        Ok(Token {
            value: Arc::from(answer.access_token),
            refresh_at: asked + lifetime - refresh_margin(lifetime),
            expires_at: asked + lifetime,
        })
    }

    /// The signed JWT: `header.claims.signature`, each base64url without padding.
    pub fn assertion(&self, now: u64) -> Result<String, ProviderError> {
        let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.key_id {
            header["kid"] = kid.as_str().into();
        }
        let claims = serde_json::json!({
            "iss": self.email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_S,
        });
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0u8; self.signer.public().modulus_len()];
        self.signer
            .sign(
                &RSA_PKCS1_SHA256,
                &self.rng,
                signed.as_bytes(),
                &mut signature,
            )
            .map_err(|_| ProviderError::Status {
                // The key's fault, not the client's: the route moves on.
                status: 401,
                message: "cannot sign the Vertex AI token request with the service-account key"
                    .into(),
                retry_after: None,
            })?;
        Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// How long before expiry a token of `lifetime` is replaced: five minutes, or half the
/// lifetime when that is shorter.
pub fn refresh_margin(lifetime: Duration) -> Duration {
    REFRESH_BEFORE.min(lifetime / 2)
}

/// The DER bytes inside a PEM block.
pub fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let text: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect();
    STANDARD.decode(text).ok().filter(|der| !der.is_empty())
}

/// `error` and `error_description` of an OAuth error answer, else the body.
fn oauth_error(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let described = parsed.as_ref().and_then(|v| {
        let error = v.get("error")?.as_str()?;
        Some(match v.get("error_description").and_then(|d| d.as_str()) {
            Some(d) => format!("{error}: {d}"),
            None => error.to_string(),
        })
    });
    described.unwrap_or_else(|| http::error_message(body))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
