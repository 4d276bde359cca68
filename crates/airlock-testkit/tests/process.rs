//! The process driver, exercised with a shell script standing in for the airlock binary: a
//! cleared environment, a temporary working directory, one log, signals, and health polling.

// Test code panics with the value on failure: that is its report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use airlock_testkit::{free_addr, free_port, http_get, AirlockProcess, RecordingUpstream};

#[tokio::test]
async fn spawns_with_a_clean_environment_in_a_temporary_directory() -> anyhow::Result<()> {
    // Set in this process, and must not reach the child.
    let script = r#"trap 'echo got TERM; exit 3' TERM
echo "cwd=$(pwd)"; echo "given=$AIRLOCK_GIVEN"; echo "leaked=${CARGO_PKG_NAME:-none}"; echo oops >&2
while true; do sleep 0.05; done"#;
    let mut process = AirlockProcess::spawn(
        Path::new("/bin/sh"),
        &["-c", script],
        vec![("AIRLOCK_GIVEN".into(), "yes".into())],
    )?;
    let log = process.wait_for_log("oops", Duration::from_secs(5)).await?;
    let workdir = process.workdir().canonicalize()?;
    assert!(log.contains(&format!("cwd={}", workdir.display())), "{log}");
    assert!(log.contains("given=yes"), "{log}");
    assert!(log.contains("leaked=none"), "{log}");

    process.signal("TERM")?;
    let status = process.wait_exit(Duration::from_secs(5)).await?;
    assert_eq!(status.code(), Some(3));
    assert!(process.log().contains("got TERM"));

    // A respawn keeps the working directory and appends to the log.
    process.respawn()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while process.log().matches("given=yes").count() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    process.kill();
    assert_eq!(
        process.log().matches("given=yes").count(),
        2,
        "{}",
        process.log()
    );
    Ok(())
}

#[tokio::test]
async fn waits_for_http_ok_and_reports_an_early_exit() -> anyhow::Result<()> {
    let upstream = RecordingUpstream::plain().await?;
    let mut process = AirlockProcess::spawn(Path::new("/bin/sh"), &["-c", "sleep 30"], vec![])?;
    process
        .wait_http_ok(
            &format!("{}/healthz", upstream.url()),
            Duration::from_secs(5),
        )
        .await?;
    let (status, body) = http_get(&format!("{}/x", upstream.url())).await?;
    assert_eq!(status, 200);
    assert!(!body.is_empty());

    let mut dying = AirlockProcess::spawn(
        Path::new("/bin/sh"),
        &["-c", "echo bad setting; exit 2"],
        vec![],
    )?;
    let url = format!("http://{}/healthz", free_addr());
    let err = dying
        .wait_http_ok(&url, Duration::from_secs(5))
        .await
        .expect_err("the process exits");
    assert!(format!("{err:#}").contains("bad setting"), "{err:#}");
    assert_ne!(free_port(), 0);
    Ok(())
}
