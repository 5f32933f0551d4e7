//! A token server as Docker Hub's auth service works: the registry answers `401` with a
//! `Bearer realm=...,service=...,scope=...` challenge, the client asks this server for a token
//! (anonymously or with basic auth) and sends it back as `Authorization: Bearer`. The tokens
//! are JWTs signed with ES256 by a key whose self-signed certificate the registry trusts
//! (`auth.token.rootcertbundle`), the certificate travelling in the header's `x5c` as
//! docker/distribution's `registry/auth/token` verifies it.
//!
//! Policy: anyone may pull repositories under `public/`; the one user may do what it asks;
//! wrong credentials are refused with `401`, as Docker Hub's auth service refuses them.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

/// The registry's `auth.token.service`, which tokens name as their audience.
pub const SERVICE: &str = "podkit-test-registry";
/// The tokens' issuer, which the registry trusts.
pub const ISSUER: &str = "podkit-test-token-server";

/// One request for a token, as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    /// The user of the basic credentials sent, if any.
    pub user: Option<String>,
    /// The `scope` parameters, e.g. `repository:public/app:pull`.
    pub scopes: Vec<String>,
    /// Whether a token was handed out (`false`: 401 for wrong credentials).
    pub granted: bool,
}

/// A running token server on 127.0.0.1.
pub struct TokenServer {
    /// `http://127.0.0.1:<port>/token`: the registry's `auth.token.realm`.
    pub realm: String,
    /// The signing key's certificate (PEM): the registry's `auth.token.rootcertbundle`.
    pub cert: PathBuf,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    stop: Arc<AtomicBool>,
    addr: String,
}

struct Signer {
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
    user: (String, String),
}

impl TokenServer {
    /// Starts the server; `dir` keeps the certificate; `user` is the one account.
    pub fn start(dir: &Path, user: (&str, &str)) -> TokenServer {
        let key = rcgen::KeyPair::generate().expect("key"); // ECDSA P-256
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "podkit test token signer");
        let cert = params.self_signed(&key).expect("certificate");
        let cert_path = dir.join("token-signer.crt");
        std::fs::write(&cert_path, cert.pem()).expect("certificate");
        let signer = Signer {
            key: EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &key.serialize_der(),
                &ring::rand::SystemRandom::new(),
            )
            .expect("ring key"),
            cert_der: cert.der().to_vec(),
            user: (user.0.to_owned(), user.1.to_owned()),
        };

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (requests2, stop2) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(stream) = stream {
                    serve(stream, &signer, &requests2);
                }
            }
        });
        TokenServer {
            realm: format!("http://{addr}/token"),
            cert: cert_path,
            requests,
            stop,
            addr,
        }
    }

    /// The requests for tokens so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.requests.lock().expect("requests").clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr); // wakes the accept loop to see `stop`
    }
}

/// Answers one request (one per connection: `Connection: close`), recorded in `requests` before
/// the answer goes out: a client that has its answer finds its request in the record (a test
/// that looked right after a refused pull once found the refusal not yet recorded).
fn serve(stream: TcpStream, signer: &Signer, requests: &Mutex<Vec<TokenRequest>>) -> Option<()> {
    let record = |request: TokenRequest| requests.lock().expect("requests").push(request);
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let target = line.split_whitespace().nth(1)?.to_owned();
    let mut authorization = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            authorization = Some(value.trim().to_owned());
        }
    }
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let scopes: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.into_owned())
        .collect();
    let credentials = authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())));
    let user = credentials.as_ref().map(|(u, _)| u.clone());
    let authenticated = match &credentials {
        None => false,
        Some(given) if *given == signer.user => true,
        Some(_) => {
            record(TokenRequest {
                user,
                scopes,
                granted: false,
            });
            respond(
                &stream,
                "401 Unauthorized",
                r#"{"details":"incorrect username or password"}"#,
            );
            return Some(());
        }
    };
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|scope| {
            // repository:<name>:<actions>; the name may hold a port's colon, the actions never.
            let (kind_name, actions) = scope.rsplit_once(':')?;
            let (kind, name) = kind_name.split_once(':')?;
            let allowed: Vec<&str> = actions
                .split(',')
                .filter(|a| authenticated || (*a == "pull" && name.starts_with("public/")))
                .collect();
            Some(serde_json::json!({"type": kind, "name": name, "actions": allowed}))
        })
        .collect();
    let token = signer.token(user.as_deref().unwrap_or(""), access);
    record(TokenRequest {
        user,
        scopes,
        granted: true,
    });
    respond(
        &stream,
        "200 OK",
        &serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string(),
    );
    Some(())
}

fn respond(mut stream: &TcpStream, status: &str, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

impl Signer {
    /// A compact JWS: base64url(header).base64url(claims).base64url(r || s).
    fn token(&self, subject: &str, access: Vec<serde_json::Value>) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_secs();
        let header = serde_json::json!({
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [STANDARD.encode(&self.cert_der)],
        });
        let claims = serde_json::json!({
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": format!("{now}-{}", std::process::id()),
            "access": access,
        });
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&ring::rand::SystemRandom::new(), signed.as_bytes())
            .expect("sign");
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }
}
