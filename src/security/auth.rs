//! Caller authentication: who is calling. Static API keys (only their SHA-256 hashes are
//! configured), JWT bearer tokens (HS256, RS256, ES256; issuer, audience and expiry checked)
//! and TLS client certificates each yield a [`Principal`]; the authenticate layer
//! ([`crate::security::layers::authenticate`]) puts it into the request's extensions.

use crate::security::tls::ClientCertificate;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fmt;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tonic::Status;

/// Metadata carrying an API key.
pub const API_KEY_HEADER: &str = "x-api-key";
/// Longest credential header the gateway reads (a JWT with large claims stays well below).
pub const MAX_CREDENTIAL_LEN: usize = 8 * 1024;

/// How a caller proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// Authentication is off (loopback, or explicitly allowed).
    Anonymous,
    ApiKey,
    Jwt,
    ClientCertificate,
}

/// An authenticated caller. Its `id` (`key:<name>`, `jwt:<subject>`, `cert:<subject DN>` or
/// `anonymous`) owns the chats it starts; `operator` callers may inspect any chat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub id: String,
    pub method: AuthMethod,
    pub operator: bool,
    /// May add custom bots to chats (AddBotParticipant): an operator, a listed caller, or
    /// one whose token carries the bot role.
    pub adds_bots: bool,
}

impl Principal {
    pub const ANONYMOUS: &'static str = "anonymous";

    pub fn anonymous() -> Self {
        Self {
            id: Self::ANONYMOUS.into(),
            method: AuthMethod::Anonymous,
            operator: false,
            adds_bots: false,
        }
    }

    /// The principal the authenticate layer put into a request (anonymous when none did).
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        request
            .extensions()
            .get::<Principal>()
            .cloned()
            .unwrap_or_else(Self::anonymous)
    }
}

/// SHA-256 hex of an API key: what the configuration holds instead of the key.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Parses a SHA-256 hex digest.
pub fn parse_key_hash(digest: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(digest, &mut out).ok()?;
    Some(out)
}

/// One configured API key: a name (the principal is `key:<name>`) and the key's hash.
#[derive(Clone)]
pub struct ApiKey {
    pub name: String,
    pub hash: [u8; 32],
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({})", self.name)
    }
}

/// A key that verifies JWT signatures, with the one algorithm it may be used with (so a
/// token cannot choose a weaker algorithm for it).
#[derive(Clone)]
pub struct JwtKey {
    pub kid: Option<String>,
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JwtKey({:?}, kid {:?})", self.algorithm, self.kid)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
}

impl JwtKey {
    /// An HS256 shared secret (at least 32 bytes, as RFC 7518 requires).
    pub fn hs256(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < 32 {
            return Err(KeyError::Invalid(
                "an HS256 secret must be at least 32 bytes".into(),
            ));
        }
        Ok(Self {
            kid: None,
            algorithm: Algorithm::HS256,
            key: DecodingKey::from_secret(secret),
        })
    }

    /// A PEM public key: RSA keys verify RS256, EC (P-256) keys ES256.
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self {
                kid: None,
                algorithm: Algorithm::RS256,
                key,
            });
        }
        match DecodingKey::from_ec_pem(pem) {
            Ok(key) => Ok(Self {
                kid: None,
                algorithm: Algorithm::ES256,
                key,
            }),
            Err(_) => Err(KeyError::Invalid(
                "not a PEM RSA or EC (P-256) public key".into(),
            )),
        }
    }

    /// The RS256 and ES256 keys of a JWKS document (other keys are skipped).
    pub fn from_jwks(json: &str) -> Result<Vec<Self>, KeyError> {
        let set: JwkSet = serde_json::from_str(json)
            .map_err(|e| KeyError::Invalid(format!("not a JWKS document: {e}")))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
                (Some(KeyAlgorithm::RS256), AlgorithmParameters::RSA(_))
                | (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
                (Some(KeyAlgorithm::ES256), AlgorithmParameters::EllipticCurve(ec))
                | (None, AlgorithmParameters::EllipticCurve(ec))
                    if ec.curve == EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                _ => continue,
            };
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|e| KeyError::Invalid(format!("a JWKS key is unusable: {e}")))?;
            keys.push(Self {
                kid: jwk.common.key_id.clone(),
                algorithm,
                key,
            });
        }
        if keys.is_empty() {
            return Err(KeyError::Invalid(
                "the JWKS document holds no RS256 or ES256 key".into(),
            ));
        }
        Ok(keys)
    }
}

/// What JWTs must say besides their signature.
#[derive(Clone, Debug)]
pub struct JwtSettings {
    pub keys: Vec<JwtKey>,
    pub issuer: String,
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
    /// Roles, as many identity providers put them in access tokens: a list, or one string.
    /// Read leniently: a token is not refused for the shape of a claim only this reads.
    #[serde(default)]
    roles: serde_json::Value,
    /// OAuth scopes, space-separated.
    #[serde(default)]
    scope: serde_json::Value,
}

impl Claims {
    /// Whether the token carries `role` as a role or a scope.
    fn grants(&self, role: &str) -> bool {
        let in_roles = match &self.roles {
            serde_json::Value::Array(list) => list.iter().any(|r| r.as_str() == Some(role)),
            serde_json::Value::String(one) => one == role,
            _ => false,
        };
        in_roles
            || self
                .scope
                .as_str()
                .is_some_and(|s| s.split_whitespace().any(|s| s == role))
    }
}

/// Everything that decides who a caller is. `Debug` shows names, never keys.
#[derive(Clone, Debug, Default)]
pub struct Authenticator {
    pub api_keys: Vec<ApiKey>,
    pub jwt: Option<JwtSettings>,
    /// Whether TLS client certificates (verified against the client CA) authenticate.
    pub client_certificates: bool,
    /// Whether every call needs a trusted client certificate (mutual TLS is the only
    /// mechanism); otherwise a certificate is one credential among others.
    pub client_certificate_required: bool,
    /// Principal ids with the operator role.
    pub operators: HashSet<String>,
    /// Principal ids that may add custom bots to chats (operators may too).
    pub bot_callers: HashSet<String>,
    /// A JWT role (`roles` claim) or scope (`scope` claim) that lets its bearer add custom
    /// bots to chats.
    pub bot_role: Option<String>,
    /// Whether reflection needs credentials too (health never does).
    pub reflection_requires_auth: bool,
}

/// Why a caller was refused. The messages name the mechanism, never the credential.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("credentials required: send `authorization: Bearer <jwt>`, `x-api-key: <key>` or a client certificate")]
    Missing,
    #[error("the API key is not valid")]
    BadApiKey,
    #[error("this gateway does not accept {0}")]
    NotAccepted(&'static str),
    #[error("the bearer token is not valid: {0}")]
    BadJwt(&'static str),
    #[error("the credential metadata is malformed")]
    Malformed,
    #[error("the client certificate is not trusted: {0}")]
    UntrustedCertificate(String),
    #[error("a client certificate signed by the client CA is required, and none was presented (many clients present a certificate only when its issuer is the CA the server names)")]
    CertificateRequired,
}

impl Authenticator {
    /// Whether any mechanism is configured (otherwise every caller is anonymous).
    pub fn enabled(&self) -> bool {
        !self.api_keys.is_empty() || self.jwt.is_some() || self.client_certificates
    }

    fn principal(&self, id: String, method: AuthMethod) -> Principal {
        let operator = self.operators.contains(&id);
        let adds_bots = operator || self.bot_callers.contains(&id);
        Principal {
            id,
            method,
            operator,
            adds_bots,
        }
    }

    /// The principal of a valid token's claims: its subject, and the bot role when the
    /// token carries it.
    fn jwt_principal(&self, claims: Claims) -> Principal {
        let mut p = self.principal(format!("jwt:{}", claims.sub), AuthMethod::Jwt);
        if let Some(role) = &self.bot_role {
            p.adds_bots |= claims.grants(role);
        }
        p
    }

    /// Authenticates a request from its headers and its connection's client certificate.
    /// A certificate that does not chain to the client CA is refused even alongside another
    /// credential: the client is misconfigured or not who it claims.
    pub fn authenticate(
        &self,
        headers: &http::HeaderMap,
        client_certificate: Option<&ClientCertificate>,
    ) -> Result<Principal, AuthError> {
        if !self.enabled() {
            return Ok(self.principal(Principal::ANONYMOUS.into(), AuthMethod::Anonymous));
        }
        let trusted = match client_certificate {
            Some(ClientCertificate::Untrusted(why)) if self.client_certificates => {
                return Err(AuthError::UntrustedCertificate(why.clone()));
            }
            Some(ClientCertificate::Trusted(subject)) if self.client_certificates => Some(subject),
            _ => None,
        };
        if self.client_certificate_required && trusted.is_none() {
            return Err(AuthError::CertificateRequired);
        }
        if let Some(value) = headers.get(http::header::AUTHORIZATION) {
            let value = credential(value)?;
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .ok_or(AuthError::Malformed)?;
            return self.check_jwt(token.trim());
        }
        if let Some(value) = headers.get(API_KEY_HEADER) {
            return self.check_api_key(credential(value)?);
        }
        if let Some(subject) = trusted {
            return Ok(self.principal(format!("cert:{subject}"), AuthMethod::ClientCertificate));
        }
        Err(AuthError::Missing)
    }

    fn check_api_key(&self, key: &str) -> Result<Principal, AuthError> {
        if self.api_keys.is_empty() {
            return Err(AuthError::NotAccepted("API keys"));
        }
        let presented: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // Every configured hash is compared, in constant time each.
        let mut found: Option<&ApiKey> = None;
        for k in &self.api_keys {
            if bool::from(k.hash.ct_eq(&presented)) {
                found = Some(k);
            }
        }
        let k = found.ok_or(AuthError::BadApiKey)?;
        Ok(self.principal(format!("key:{}", k.name), AuthMethod::ApiKey))
    }

    fn check_jwt(&self, token: &str) -> Result<Principal, AuthError> {
        let jwt = self
            .jwt
            .as_ref()
            .ok_or(AuthError::NotAccepted("bearer tokens"))?;
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| AuthError::BadJwt("malformed"))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&jwt.issuer]);
        validation.set_audience(&[&jwt.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = jwt.leeway.as_secs();
        let mut outcome = Err(AuthError::BadJwt("no configured key matches its algorithm"));
        let candidates = jwt.keys.iter().filter(|k| {
            k.algorithm == header.alg
                && match (&k.kid, &header.kid) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
        });
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => {
                    if data.claims.sub.is_empty() {
                        return Err(AuthError::BadJwt("its subject is empty"));
                    }
                    return Ok(self.jwt_principal(data.claims));
                }
                Err(e) => outcome = Err(AuthError::BadJwt(jwt_reason(e.kind()))),
            }
        }
        outcome
    }
}

fn credential(value: &http::HeaderValue) -> Result<&str, AuthError> {
    if value.len() > MAX_CREDENTIAL_LEN {
        return Err(AuthError::Malformed);
    }
    value.to_str().map_err(|_| AuthError::Malformed)
}

fn jwt_reason(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => "it has expired",
        K::ImmatureSignature => "it is not valid yet",
        K::InvalidAudience => "wrong audience",
        K::InvalidIssuer => "wrong issuer",
        K::InvalidSignature => "bad signature",
        K::MissingRequiredClaim(_) => "a required claim (exp, iss, aud, sub) is missing",
        K::InvalidAlgorithm => "wrong algorithm",
        _ => "malformed",
    }
}

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Self {
        Status::unauthenticated(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bot_role_comes_from_a_tokens_roles_or_scopes() {
        let auth = Authenticator {
            jwt: Some(JwtSettings {
                keys: vec![JwtKey::hs256(b"0123456789abcdef0123456789abcdef").unwrap()],
                issuer: "iss".into(),
                audience: "aud".into(),
                leeway: Duration::from_secs(5),
            }),
            bot_role: Some("chat-bots".into()),
            bot_callers: ["key:none".to_string()].into(),
            ..Default::default()
        };
        let exp = jsonwebtoken::get_current_timestamp() + 600;
        let principal = |extra: serde_json::Value| {
            let mut claims =
                serde_json::json!({ "sub": "svc", "iss": "iss", "aud": "aud", "exp": exp });
            claims
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let token = jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
            )
            .unwrap();
            let mut h = http::HeaderMap::new();
            h.insert("authorization", format!("Bearer {token}").parse().unwrap());
            auth.authenticate(&h, None).unwrap()
        };
        assert!(principal(serde_json::json!({ "roles": ["reader", "chat-bots"] })).adds_bots);
        assert!(principal(serde_json::json!({ "roles": "chat-bots" })).adds_bots);
        assert!(principal(serde_json::json!({ "scope": "openid chat-bots" })).adds_bots);
        let plain = principal(serde_json::json!({ "roles": ["chat-bots-admin"], "scope": 7 }));
        assert_eq!(plain.id, "jwt:svc");
        assert!(!plain.adds_bots && !plain.operator);
    }

    #[test]
    fn key_hashes_round_trip_and_bad_hex_is_refused() {
        let h = hash_api_key("secret-key");
        assert_eq!(h.len(), 64);
        assert!(parse_key_hash(&h).is_some());
        assert!(parse_key_hash("zz").is_none());
        assert!(parse_key_hash(&"g".repeat(64)).is_none());
        assert!(parse_key_hash(&"é".repeat(32)).is_none());
    }

    #[test]
    fn api_keys_authenticate_and_never_print() {
        let auth = Authenticator {
            api_keys: vec![ApiKey {
                name: "mobile".into(),
                hash: parse_key_hash(&hash_api_key("k-123")).unwrap(),
            }],
            operators: ["key:mobile".to_string()].into(),
            ..Default::default()
        };
        let mut h = http::HeaderMap::new();
        assert_eq!(auth.authenticate(&h, None), Err(AuthError::Missing));
        h.insert(API_KEY_HEADER, "k-123".parse().unwrap());
        let p = auth.authenticate(&h, None).unwrap();
        assert_eq!(p.id, "key:mobile");
        assert!(p.operator);
        h.insert(API_KEY_HEADER, "k-124".parse().unwrap());
        assert_eq!(auth.authenticate(&h, None), Err(AuthError::BadApiKey));
        assert!(!format!("{auth:?}").contains("k-123"));
        h.clear();
        h.insert("authorization", "Bearer x.y.z".parse().unwrap());
        assert_eq!(
            auth.authenticate(&h, None),
            Err(AuthError::NotAccepted("bearer tokens"))
        );
    }

    #[test]
    fn disabled_authentication_is_anonymous() {
        let auth = Authenticator::default();
        assert_eq!(
            auth.authenticate(&http::HeaderMap::new(), None),
            Ok(Principal::anonymous())
        );
    }

    #[test]
    fn short_hs256_secrets_are_refused() {
        assert!(JwtKey::hs256(b"short").is_err());
        assert!(JwtKey::hs256(&[7u8; 32]).is_ok());
        assert!(JwtKey::from_pem(b"not a key").is_err());
        assert!(JwtKey::from_jwks("{\"keys\":[]}").is_err());
    }
}
