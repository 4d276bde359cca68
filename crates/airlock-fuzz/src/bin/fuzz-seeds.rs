//! Writes the seed corpus under `fuzz/corpus/<target>/`: valid and nearly valid inputs for each
//! target, so that the fuzzer starts from the interesting shapes instead of from nothing.
//! Run it from the workspace root: `cargo run -p airlock-fuzz --bin fuzz-seeds`. Existing files
//! are kept; a seed's file name is a hash of its content.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;

use airlock_core::{BearerSecret, SecretKind};
use airlock_crypto::{Keyring, MasterKey, SecretContext};
use airlock_fuzz::{CONTEXTS, FUZZ_KEY};

fn write(target: &str, seed: &[u8]) {
    let dir = Path::new("fuzz/corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    // FNV-1a: a stable, dependency-free name.
    let hash = seed.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    std::fs::write(dir.join(format!("seed-{hash:016x}")), seed).unwrap();
}

fn main() {
    let gateway = BearerSecret::generate(SecretKind::Gateway);
    let api = BearerSecret::generate(SecretKind::ApiKey);
    for seed in [
        gateway.expose().to_owned(),
        api.expose().to_owned(),
        format!("{}x", gateway.expose()),
        gateway.expose()[..gateway.expose().len() - 1].to_owned(),
        gateway.expose().replace("gws_", "GWS_"),
        gateway.digest().to_hex(),
        "gws_".to_owned(),
    ] {
        write("token", seed.as_bytes());
    }

    for seed in [
        "https://api.openai.com/v1",
        "https://api.anthropic.com",
        "http://localhost:11434/v1/",
        "https://[::1]:8443/a/b",
        "https://10.0.0.1/v1beta/models",
        "https://u:p@x.com",
        "https://x.com/a/../b",
        "https://x.com/%2e%2e/",
        "https://x.com?q=1",
        "127.0.0.0/8, ::1, 10.0.0.0/8",
        "10.0.3.17,fd00:1::/64,0.0.0.0/0",
        "::ffff:10.0.0.1",
        "169.254.169.254",
        "64:ff9b::a00:1",
        "2002:a00:1::",
    ] {
        write("endpoint", seed.as_bytes());
    }
    write("endpoint", &[10, 0, 0, 1]);
    write(
        "endpoint",
        &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 169, 254, 169, 254],
    );

    let keyring = Keyring::new(vec![MasterKey::from_base64(FUZZ_KEY).unwrap()]).unwrap();
    for (i, (account, secret, version)) in CONTEXTS.iter().enumerate() {
        let ctx = SecretContext {
            account_id: account,
            secret_id: secret,
            version: *version,
        };
        for value in [&b"sk-fuzz-value"[..], b"", &[0u8; 300]] {
            let mut seed = vec![i as u8];
            seed.extend(keyring.seal(&ctx, value).unwrap());
            write("envelope", &seed);
        }
    }
    write("envelope", FUZZ_KEY.as_bytes());
    write("envelope", b"\x00\x01\x00\x00\x00\x00");

    for (mechanism, seed) in [
        (0u8, "/v1/chat/completions?stream=true\nauthorization:Bearer $T\ncontent-type:application/json"),
        (2, "/v1/messages\nx-api-key:$T\nx-api-key:sk-mine\nanthropic-version:2023-06-01"),
        (3, "/x\napi-key:$T\nconnection:api-key, x-api-key\nte:trailers"),
        (4, "/x\nX-Goog-Api-Key:$T\nProxy-Authorization:Bearer $T\nx-upstream-auth:mine"),
        (1, "/x\nauthorization:Basic $T"),
        (0, "/x?key=$T\nx-api-key:$T"),
        (0, "/x\nx-api-key:$T\napi-key:$U"),
        (2, "/x\nx-api-key:$T\nx-$L:1"),
        (2, "/x\nx-api-key:$T\ncookie:s=$T"),
        (0, "http://evil.example/x\nhost:evil.example\nauthorization:bearer   $T  "),
    ] {
        let mut data = vec![mechanism];
        data.extend_from_slice(seed.as_bytes());
        write("rewrite", &data);
    }

    for (stride, seed) in [
        (0u8, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        (3, "POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\n\r\n"),
        (5, "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nx-t: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
        (1, "POST /a HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        (2, "GET / HTTP/1.1\nHost: x\n\n"),
        (4, "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"),
        (6, "GET / HTTP/1.1\r\nX : a\r\n\r\n"),
        (7, "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x01\x02"),
        (8, "CONNECT x:443 HTTP/1.1\r\n\r\n"),
        (9, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0"),
        (10, "\r\n\r\nGET / HTTP/1.0\r\nContent-Length: 2\r\n\r\nab"),
    ] {
        let mut data = vec![stride];
        data.extend_from_slice(seed.as_bytes());
        write("h1guard", &data);
    }
    println!("seeds written under fuzz/corpus/");
}
