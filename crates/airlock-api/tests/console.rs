//! The operator console's sessions over plain HTTP, on SQLite and on Postgres (the browser test
//! is `tests/console.rs` at the workspace root): a session lives exactly as long as its API key,
//! a changed cookie is no session, a POST needs the session's CSRF token, and a launcher key's
//! changes are refused by the server, not only hidden.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use airlock_testkit::TestRequest;
use http::Method;
use serde_json::json;
use support::Harness;

/// Signs in with `key`; the session cookie (`name=value`).
async fn sign_in(h: &Harness, key: &str) -> String {
    let resp = TestRequest::post(&format!("{}/ui/sign-in", h.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("api_key={key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status.as_u16(), 303, "{}", resp.text());
    let cookie = resp.header("set-cookie").unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

/// A console page with `cookie`: its status, `Location` and body.
async fn page(
    h: &Harness,
    method: Method,
    path: &str,
    cookie: &str,
    form: &str,
) -> (u16, String, String) {
    let mut req = TestRequest::new(method, &format!("{}{path}", h.base)).header("cookie", cookie);
    if !form.is_empty() {
        req = req
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_owned());
    }
    let resp = req.send().await.unwrap();
    (
        resp.status.as_u16(),
        resp.header("location").unwrap_or_default(),
        resp.text(),
    )
}

/// The CSRF token in a page's forms.
fn csrf(html: &str) -> String {
    let (_, rest) = html.split_once("name=\"csrf\" value=\"").unwrap();
    rest.split('"').next().unwrap().to_owned()
}

both!(sessions_end_with_their_key, |h: Harness| async move {
    let key = h
        .post("/v1/api-keys", json!({"name": "console", "scope": "admin"}))
        .await;
    let cookie = sign_in(&h, key["key"].as_str().unwrap()).await;
    assert!(!cookie.contains(key["key"].as_str().unwrap()));
    let (status, _, html) = page(&h, Method::GET, "/ui/devboxes", &cookie, "").await;
    assert_eq!(status, 200);
    let token = csrf(&html);

    // A changed cookie is no session: each byte of the tag and of the text.
    let value = cookie.split_once('=').unwrap().1;
    for at in [0, value.len() / 2, value.len() - 1] {
        let mut bytes = value.as_bytes().to_vec();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let forged = format!("airlock_console={}", String::from_utf8(bytes).unwrap());
        let (status, to, _) = page(&h, Method::GET, "/ui/devboxes", &forged, "").await;
        assert_eq!((status, to.as_str()), (303, "/ui/sign-in"), "byte {at}");
    }

    // POSTs: without the token, with another session's, then with its own.
    let other = sign_in(&h, support::ADMIN).await;
    let (_, _, other_html) = page(&h, Method::GET, "/ui/devboxes", &other, "").await;
    let register = "source_addresses=127.0.0.1&name=from-the-console";
    for form in [
        register.to_owned(),
        format!("{register}&csrf=x"),
        format!("{register}&csrf={}", csrf(&other_html)),
    ] {
        let (status, _, _) = page(&h, Method::POST, "/ui/devboxes", &cookie, &form).await;
        assert_eq!(status, 403, "{form}");
    }
    assert_eq!(h.get("/v1/devboxes").await["devboxes"], json!([]));
    let form = format!("{register}&csrf={token}");
    let (status, to, _) = page(&h, Method::POST, "/ui/devboxes", &cookie, &form).await;
    assert_eq!(status, 303);
    assert!(to.starts_with("/ui/devboxes/dbx_"), "{to}");

    // Revoked: the session ends at the next request, on the page and on the data endpoints.
    let id = key["id"].as_str().unwrap();
    h.post(&format!("/v1/api-keys/{id}/revoke"), json!({}))
        .await;
    for path in ["/ui/devboxes", "/ui/", "/ui/data/traffic"] {
        let (status, to, _) = page(&h, Method::GET, path, &cookie, "").await;
        assert_eq!((status, to.as_str()), (303, "/ui/sign-in"), "{path}");
    }
    let form = format!("{register}&csrf={token}");
    let (status, _, _) = page(&h, Method::POST, "/ui/devboxes", &cookie, &form).await;
    assert_eq!(status, 303);
    assert_eq!(
        h.get("/v1/devboxes").await["devboxes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
});

both!(
    launcher_keys_cannot_change_what_they_cannot_see,
    |h: Harness| async move {
        let key = h
            .post(
                "/v1/api-keys",
                json!({"name": "launcher", "scope": "launcher"}),
            )
            .await;
        let cookie = sign_in(&h, key["key"].as_str().unwrap()).await;
        let (status, _, html) = page(&h, Method::GET, "/ui/secrets", &cookie, "").await;
        assert_eq!(status, 200);
        assert!(html.contains("needs an admin API key"), "{html}");
        let token = csrf(&html);
        // The form is not offered, and posting it anyway is refused by the secrets handler.
        let form = format!("name=STOLEN&value=x&csrf={token}");
        let (status, _, body) = page(&h, Method::POST, "/ui/secrets", &cookie, &form).await;
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("admin API key"), "{body}");
        assert_eq!(h.get("/v1/secrets").await["secrets"], json!([]));
    }
);
