//! A real control plane for tests: the router on a real listener, over a real store (a fresh
//! SQLite file or a fresh Postgres database), with a bootstrap admin key.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use airlock_crypto::{Keyring, MasterKey};
use airlock_store::Store;
use airlock_testkit::TestRequest;
use http::Method;
use serde_json::Value;

pub const ADMIN: &str = "test-admin-token-0123456789abcdef";

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct Harness {
    pub base: String,
    pub store: Store,
    pub url: String,
    pub keyring: Arc<Keyring>,
    pub dir: tempfile::TempDir,
}

pub async fn harness(backend: Backend) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}/airlock.db", dir.path().display()),
        Backend::Postgres => airlock_testkit::pg::shared()
            .await
            .fresh_database()
            .await
            .unwrap(),
    };
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    airlock_api::bootstrap(&store, Some(ADMIN)).await.unwrap();
    let keyring = Arc::new(Keyring::new(vec![MasterKey::generate().unwrap()]).unwrap());
    let policy = airlock_core::UpstreamPolicy::parse("127.0.0.0/8")
        .unwrap()
        .with_own_listeners(["127.0.0.1:7080".parse().unwrap()]);
    let state = airlock_api::AppState {
        store: store.clone(),
        keyring: keyring.clone(),
        public_url: "http://127.0.0.1:7080".into(),
        policy,
        data_plane_ready: Arc::new(|| true),
        draining: Arc::new(|| false),
        metrics: airlock_api::ApiMetrics::default(),
        routers: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(airlock_api::serve(
        listener,
        state,
        airlock_api::ServeOptions::default(),
        std::future::pending(),
    ));
    Harness {
        base,
        store,
        url,
        keyring,
        dir,
    }
}

impl Harness {
    /// Sends a request with the given key; returns the status and the JSON body (Null if none).
    pub async fn call_as(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = TestRequest::new(method, &format!("{}{path}", self.base)).bearer(key);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.unwrap();
        (resp.status.as_u16(), resp.json().unwrap_or(Value::Null))
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.call_as(ADMIN, method, path, body).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.call(Method::POST, path, Some(&body)).await;
        assert_eq!(status, 200, "POST {path}: {v}");
        v
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, v) = self.call(Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }
}

/// Runs a test body against SQLite and against Postgres.
#[macro_export]
macro_rules! both {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                ($body)(support::harness(support::Backend::Sqlite).await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                ($body)(support::harness(support::Backend::Postgres).await).await;
            }
        }
    };
}
