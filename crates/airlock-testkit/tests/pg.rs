//! The throwaway PostgreSQL: the shared server hands out distinct, reachable databases, and a
//! private cluster survives an immediate stop with its data.

// Test code panics with the value on failure: that is its report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use airlock_testkit::pg::{self, PgCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_server_gives_each_caller_a_distinct_database() -> anyhow::Result<()> {
    // Concurrent first callers must share one start.
    let servers = futures_join(4).await;
    let first = servers[0] as *const pg::PgServer;
    assert!(servers.iter().all(|s| std::ptr::eq(*s, first)));

    let server = pg::shared().await;
    let a = server.fresh_database().await?;
    let b = server.fresh_database().await?;
    assert_ne!(a, b);
    if server.cluster().is_some() {
        assert!(a.starts_with("postgres://postgres@127.0.0.1:"), "{a}");
    }

    for url in [&a, &b] {
        assert_eq!(pg::psql(url, "select 1").await?.trim(), "1");
        let path = url.rsplit('/').next().unwrap_or_default();
        let name = path.split('?').next().unwrap_or_default();
        assert_eq!(
            pg::psql(url, "select current_database()").await?.trim(),
            name
        );
    }
    // What one test writes, another does not see.
    pg::psql(&a, "create table t (x int); insert into t values (7)").await?;
    assert_eq!(pg::psql(&a, "select x from t").await?.trim(), "7");
    assert!(pg::psql(&b, "select x from t").await.is_err());
    Ok(())
}

async fn futures_join(n: usize) -> Vec<&'static pg::PgServer> {
    let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(pg::shared())).collect();
    let mut servers = Vec::new();
    for task in tasks {
        servers.push(task.await.expect("pg::shared task"));
    }
    servers
}

#[tokio::test]
async fn private_cluster_keeps_its_data_across_an_outage() -> anyhow::Result<()> {
    let cluster = PgCluster::start().await?;
    let dir = cluster.socket_dir().to_path_buf();
    assert!(cluster.data_dir().join("PG_VERSION").is_file());

    let url = cluster.fresh_database().await?;
    pg::psql(
        &url,
        "create table kept (v text); insert into kept values ('before')",
    )
    .await?;

    cluster.stop().await?;
    assert!(!cluster.is_running());
    let err = pg::psql(&url, "select 1")
        .await
        .expect_err("the server is down");
    assert!(format!("{err:#}").contains("psql failed"), "{err:#}");

    cluster.resume().await?;
    assert_eq!(pg::psql(&url, "select v from kept").await?.trim(), "before");

    pg::psql(&url, "insert into kept values ('after')").await?;
    cluster.restart().await?;
    assert_eq!(
        pg::psql(&url, "select string_agg(v, ',' order by v) from kept")
            .await?
            .trim(),
        "after,before"
    );
    let port = cluster.port();
    assert!(url.contains(&format!(":{port}/")));

    drop(cluster);
    // Dropping the cluster stops it and removes its directory.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(pg::psql(&url, "select 1").await.is_err());
    Ok(())
}
