//! Caller authentication and per-chat authorization end to end: API keys, JWTs (HS256,
//! RS256 from a PEM key, ES256 from a JWKS file), mutual TLS, chat ownership and operators.
//! Keys and certificates are generated at test time.

use crate::support::gateway::*;
use connect_chat_gateway::pb::{self, chat_gateway_client::ChatGatewayClient};
use connect_chat_gateway::security::auth::{hash_api_key, parse_key_hash, ApiKey, Authenticator};
use connect_chat_gateway::security::auth::{JwtKey, JwtSettings};
use connect_chat_gateway::security::tls::TlsSettings;
use connect_chat_gateway::security::SecurityOptions;
use connect_chat_gateway::sim::SimConfig;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Request};

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "chat-gateway";
const HS_SECRET: &[u8] = b"an-hs256-secret-of-at-least-32-bytes!!";
const MOBILE_KEY: &str = "mobile-api-key-0123456789";
const WEB_KEY: &str = "web-api-key-9876543210";
const OPS_KEY: &str = "ops-api-key-5555555555";

/// The credential a request carries.
#[derive(Clone)]
enum Cred {
    None,
    Key(String),
    Bearer(String),
}

fn with<T>(msg: T, cred: &Cred) -> Request<T> {
    let mut r = Request::new(msg);
    match cred {
        Cred::None => {}
        Cred::Key(k) => {
            r.metadata_mut().insert("x-api-key", k.parse().unwrap());
        }
        Cred::Bearer(t) => {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
    }
    r
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(sub: &str, iss: &str, aud: &str, exp: u64) -> serde_json::Value {
    serde_json::json!({ "sub": sub, "iss": iss, "aud": aud, "exp": exp })
}

struct Keys {
    rsa: EncodingKey,
    ec: EncodingKey,
    security: SecurityOptions,
}

fn api_key(name: &str, key: &str) -> ApiKey {
    ApiKey {
        name: name.into(),
        hash: parse_key_hash(&hash_api_key(key)).unwrap(),
    }
}

/// API keys, an HS256 secret, an RSA PEM key and an EC key in a JWKS document.
fn keys() -> Keys {
    let rsa = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let ec = KeyPair::generate().unwrap();
    let rsa_enc = EncodingKey::from_rsa_pem(rsa.serialize_pem().as_bytes()).unwrap();
    let ec_enc = EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap();
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&ec_enc, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("ec-1".into());
    let jwks = serde_json::json!({ "keys": [jwk] }).to_string();
    let mut jwt_keys = vec![
        JwtKey::hs256(HS_SECRET).unwrap(),
        JwtKey::from_pem(rsa.public_key_pem().as_bytes()).unwrap(),
    ];
    jwt_keys.extend(JwtKey::from_jwks(&jwks).unwrap());
    let auth = Authenticator {
        api_keys: vec![
            api_key("mobile", MOBILE_KEY),
            api_key("web", WEB_KEY),
            api_key("ops", OPS_KEY),
        ],
        jwt: Some(JwtSettings {
            keys: jwt_keys,
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            leeway: Duration::from_secs(5),
        }),
        operators: ["key:ops".to_string()].into(),
        ..Default::default()
    };
    Keys {
        rsa: rsa_enc,
        ec: ec_enc,
        security: SecurityOptions {
            auth: Arc::new(auth),
            ..Default::default()
        },
    }
}

async fn harness(security: SecurityOptions) -> Harness {
    Harness::with_options(
        SimConfig {
            agent: fast_agent(),
            ..SimConfig::default()
        },
        |o| o.security = security,
    )
    .await
}

fn start(name: &str) -> pb::StartChatRequest {
    pb::StartChatRequest {
        display_name: name.into(),
        ..Default::default()
    }
}

async fn start_as(
    client: &mut ChatGatewayClient<Channel>,
    cred: &Cred,
) -> Result<pb::StartChatResponse, tonic::Status> {
    client
        .start_chat(with(start("Ada"), cred))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn every_call_needs_a_valid_credential() {
    let k = keys();
    let mut h = harness(k.security.clone()).await;
    let hs = |c: &serde_json::Value| {
        encode(
            &Header::new(Algorithm::HS256),
            c,
            &EncodingKey::from_secret(HS_SECRET),
        )
        .unwrap()
    };
    let valid = claims("alice", ISSUER, AUDIENCE, now() + 300);

    // Refused: each with UNAUTHENTICATED and a message that never echoes the credential.
    let wrong_secret = encode(
        &Header::new(Algorithm::HS256),
        &valid,
        &EncodingKey::from_secret(b"another-secret-another-secret-another"),
    )
    .unwrap();
    let refused = [
        (Cred::None, "credentials required"),
        (Cred::Key("not-a-key".into()), "API key"),
        (Cred::Key(String::new()), "API key"),
        (
            Cred::Bearer(hs(&claims("alice", ISSUER, AUDIENCE, now() - 600))),
            "expired",
        ),
        (
            Cred::Bearer(hs(&claims("alice", ISSUER, "someone-else", now() + 300))),
            "audience",
        ),
        (
            Cred::Bearer(hs(&claims(
                "alice",
                "https://evil.test",
                AUDIENCE,
                now() + 300,
            ))),
            "issuer",
        ),
        (
            Cred::Bearer(hs(
                &serde_json::json!({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE}),
            )),
            "claim",
        ),
        (Cred::Bearer(wrong_secret), "signature"),
        (Cred::Bearer("not.a.jwt".into()), "bearer token"),
        (
            Cred::Bearer(
                encode(
                    &Header::new(Algorithm::HS384),
                    &valid,
                    &EncodingKey::from_secret(HS_SECRET),
                )
                .unwrap(),
            ),
            "algorithm",
        ),
    ];
    for (cred, why) in refused {
        let e = start_as(&mut h.client, &cred).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{why}: {e:?}");
        assert!(e.message().contains(why), "{why}: {}", e.message());
        if let Cred::Key(s) | Cred::Bearer(s) = &cred {
            if !s.is_empty() {
                assert!(
                    !e.message().contains(s.as_str()),
                    "the credential is echoed"
                );
            }
        }
    }

    // Accepted: an API key, and JWTs signed with HS256, RS256 (PEM) and ES256 (JWKS).
    let mut es = Header::new(Algorithm::ES256);
    es.kid = Some("ec-1".into());
    for cred in [
        Cred::Key(MOBILE_KEY.into()),
        Cred::Bearer(hs(&valid)),
        Cred::Bearer(encode(&Header::new(Algorithm::RS256), &valid, &k.rsa).unwrap()),
        Cred::Bearer(encode(&es, &valid, &k.ec).unwrap()),
    ] {
        let chat = start_as(&mut h.client, &cred).await.expect("accepted");
        assert!(!chat.chat_token.is_empty());
    }

    // Health needs no credential.
    let mut health = tonic_health::pb::health_client::HealthClient::new(h.channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health is open")
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    h.stop().await;
}

#[tokio::test]
async fn a_chat_token_works_only_for_the_principal_that_started_the_chat() {
    let k = keys();
    let mut h = harness(k.security.clone()).await;
    let mobile = Cred::Key(MOBILE_KEY.into());
    let web = Cred::Key(WEB_KEY.into());
    let chat = start_as(&mut h.client, &mobile).await.unwrap();
    let get = |chat: pb::ChatRef| pb::GetChatRequest { chat: Some(chat) };

    h.client
        .get_chat(with(get(chat_ref(&chat)), &mobile))
        .await
        .expect("the owner gets its chat");
    // Another principal with the valid chat token.
    let e = h
        .client
        .get_chat(with(get(chat_ref(&chat)), &web))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let send = pb::SendMessageRequest {
        chat: Some(chat_ref(&chat)),
        content: "hi".into(),
        ..Default::default()
    };
    let e = h
        .client
        .send_message(with(send.clone(), &web))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // The owner with a forged token.
    let mut forged = chat_ref(&chat);
    forged.chat_token = "A".repeat(43);
    let e = h
        .client
        .get_chat(with(get(forged), &mobile))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(!e.message().contains(&chat.chat_token));
    h.client
        .send_message(with(send, &mobile))
        .await
        .expect("the owner sends");
    h.stop().await;
}

#[tokio::test]
async fn operators_inspect_any_chat_without_its_token_but_cannot_act() {
    let k = keys();
    let mut h = harness(k.security.clone()).await;
    let mobile = Cred::Key(MOBILE_KEY.into());
    let ops = Cred::Key(OPS_KEY.into());
    let web = Cred::Key(WEB_KEY.into());
    let chat = start_as(&mut h.client, &mobile).await.unwrap();
    let tokenless = pb::ChatRef {
        contact_id: chat.contact_id.clone(),
        chat_token: String::new(),
        ..Default::default()
    };
    let info = h
        .client
        .get_chat(with(
            pb::GetChatRequest {
                chat: Some(tokenless.clone()),
            },
            &ops,
        ))
        .await
        .expect("an operator inspects the chat")
        .into_inner();
    assert_eq!(info.contact_id, chat.contact_id);
    h.client
        .get_transcript(with(
            pb::GetTranscriptRequest {
                chat: Some(tokenless.clone()),
                ..Default::default()
            },
            &ops,
        ))
        .await
        .expect("an operator reads the transcript");
    let mut stream = h
        .client
        .subscribe(with(
            pb::SubscribeRequest {
                chat: Some(tokenless.clone()),
                resume_cursor: String::new(),
                ..Default::default()
            },
            &ops,
        ))
        .await
        .expect("an operator subscribes")
        .into_inner();
    assert!(next(&mut stream).await.is_some());
    // Not an operator: the same tokenless request is refused.
    let e = h
        .client
        .get_chat(with(
            pb::GetChatRequest {
                chat: Some(tokenless.clone()),
            },
            &web,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // An operator may not act on the chat, even with its token.
    let e = h
        .client
        .send_message(with(
            pb::SendMessageRequest {
                chat: Some(chat_ref(&chat)),
                content: "hi".into(),
                ..Default::default()
            },
            &ops,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    h.stop().await;
}

/// A CA, and certificates it signs.
struct Pki {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl Pki {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self {
            issuer: Issuer::new(params, key),
            ca_pem: cert.pem(),
        }
    }

    /// A leaf certificate and its key (PEM).
    fn leaf(&self, common_name: &str, dns: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

async fn tls_client(
    h: &Harness,
    ca: &str,
    identity: Option<&(String, String)>,
) -> Result<ChatGatewayClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://localhost:{}", h.addr.port()))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(ChatGatewayClient::new(channel))
}

/// A gateway serving only TLS, with a certificate for `localhost` from `pki`, which is also
/// its client CA. The harness's own plaintext connection fails: use [`tls_client`].
async fn mtls_harness(pki: &Pki, auth: Authenticator) -> Harness {
    let (server_cert, server_key) = pki.leaf("gateway", &["localhost"]);
    let tls = TlsSettings::from_pem(
        server_cert.as_bytes(),
        server_key.as_bytes(),
        Some(pki.ca_pem.as_bytes()),
        Default::default(),
    )
    .unwrap();
    let security = SecurityOptions {
        auth: Arc::new(auth),
        tls: Some(tls),
        ..Default::default()
    };
    Harness::with_options_lazy(
        SimConfig {
            agent: fast_agent(),
            ..SimConfig::default()
        },
        |o| o.security = security,
    )
    .await
}

#[tokio::test]
async fn mutual_tls_makes_the_certificate_subject_the_principal() {
    let pki = Pki::new("test client CA");
    let rogue = Pki::new("rogue CA");
    let client_a = pki.leaf("client-a", &[]);
    let client_b = pki.leaf("client-b", &[]);
    let impostor = rogue.leaf("client-a", &[]);
    let h = mtls_harness(
        &pki,
        Authenticator {
            // An API key too: a client certificate is one credential among others.
            api_keys: vec![api_key("mobile", MOBILE_KEY)],
            client_certificates: true,
            operators: ["cert:CN=client-b".to_string()].into(),
            ..Default::default()
        },
    )
    .await;

    let mut a = tls_client(&h, &pki.ca_pem, Some(&client_a)).await.unwrap();
    let chat = a
        .start_chat(start("Ada"))
        .await
        .expect("client-a starts a chat")
        .into_inner();
    a.get_chat(pb::GetChatRequest {
        chat: Some(chat_ref(&chat)),
    })
    .await
    .expect("client-a owns it");

    // Without a certificate or other credential: UNAUTHENTICATED.
    let mut anonymous = tls_client(&h, &pki.ca_pem, None).await.unwrap();
    let e = anonymous.start_chat(start("Ada")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    // The API key over TLS without a certificate: a different principal from client-a.
    let e = anonymous
        .get_chat(with(
            pb::GetChatRequest {
                chat: Some(chat_ref(&chat)),
            },
            &Cred::Key(MOBILE_KEY.into()),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // client-b is an operator by its certificate subject.
    let mut b = tls_client(&h, &pki.ca_pem, Some(&client_b)).await.unwrap();
    b.get_chat(pb::GetChatRequest {
        chat: Some(pb::ChatRef {
            contact_id: chat.contact_id.clone(),
            chat_token: String::new(),
            ..Default::default()
        }),
    })
    .await
    .expect("client-b inspects as an operator");

    // A certificate from another CA (even with the same subject) is UNAUTHENTICATED, with
    // the reason, even alongside a valid API key.
    let mut impostor = tls_client(&h, &pki.ca_pem, Some(&impostor)).await.unwrap();
    for cred in [Cred::None, Cred::Key(MOBILE_KEY.into())] {
        let e = impostor
            .start_chat(with(start("Ada"), &cred))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        assert!(e.message().contains("not trusted"), "{e:?}");
    }
    h.stop().await;
}

#[tokio::test]
async fn with_mutual_tls_alone_every_call_needs_a_trusted_certificate() {
    let pki = Pki::new("test client CA");
    let client = pki.leaf("client-a", &[]);
    let h = mtls_harness(
        &pki,
        Authenticator {
            client_certificates: true,
            client_certificate_required: true,
            ..Default::default()
        },
    )
    .await;
    let mut anonymous = tls_client(&h, &pki.ca_pem, None).await.unwrap();
    let e = anonymous.start_chat(start("Ada")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("client certificate"), "{e:?}");
    // Health stays open to probes without a certificate.
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        Channel::from_shared(format!("https://localhost:{}", h.addr.port()))
            .unwrap()
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&pki.ca_pem))
                    .domain_name("localhost"),
            )
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health needs no credential");
    let mut a = tls_client(&h, &pki.ca_pem, Some(&client)).await.unwrap();
    a.start_chat(start("Ada"))
        .await
        .expect("client-a is trusted");
    h.stop().await;
}
