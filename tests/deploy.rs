//! The files under `deploy/` against the binary they deploy: every process they define is run
//! through `airlock config check` with exactly the environment the file gives it (so a
//! misspelt or unknown setting, or a value that does not parse, fails here), and the pieces
//! that must agree with each other do: ports and probes, the load balancer and the trusted
//! proxies, selectors, grace periods, the master key mounted where the setting points.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_testkit::{airlock_binary, workspace_root};
use airlock_tests::{compose_env, compose_file, scalar, yaml_documents};
use serde_json::Value;

type Env = BTreeMap<String, String>;

fn deploy_dir() -> PathBuf {
    workspace_root().join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The settings documented in docs/configuration.md (its table rows start with the name).
fn documented_settings() -> BTreeSet<String> {
    let text = read(&workspace_root().join("docs/configuration.md"));
    let mut names = BTreeSet::new();
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("AIRLOCK_") && word.len() > "AIRLOCK_".len() {
            names.insert(word.to_owned());
        }
    }
    names
}

/// A master key file for `config check` to read.
fn key_file(dir: &Path) -> PathBuf {
    let out = Command::new(airlock_binary())
        .args(["keys", "generate"])
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success());
    let path = dir.join("master.key");
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

/// Runs `airlock config check` with only `env` (plus PATH): the same check `serve` makes
/// before it opens the database. Returns its output; panics with it on failure.
fn config_check(what: &str, env: &Env) -> String {
    let documented = documented_settings();
    for name in env.keys().filter(|k| k.starts_with("AIRLOCK_")) {
        assert!(
            documented.contains(name),
            "{what}: {name} is not documented in docs/configuration.md"
        );
    }
    let mut cmd = Command::new(airlock_binary());
    cmd.args(["config", "check", "--strict"])
        .env_clear()
        .envs(env);
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what}: `airlock config check` refused the settings this file gives:\n{text}"
    );
    text
}

fn port_of(addr: &str) -> u16 {
    addr.parse::<SocketAddr>()
        .unwrap_or_else(|_| panic!("{addr:?} is not an address"))
        .port()
}

// ------------------------------------------------------------------------------------------
// Compose

/// The compose services that run the Airlock image, by name.
fn compose_airlock_services(compose: &Value) -> BTreeMap<String, Value> {
    compose["services"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, s)| s["image"] == "airlock:local")
        .map(|(n, s)| (n.clone(), s.clone()))
        .collect()
}

#[test]
fn compose_processes_pass_the_binarys_own_check() {
    let compose = compose_file();
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path());
    let services = compose_airlock_services(&compose);
    let roles: BTreeMap<String, String> = services
        .iter()
        .map(|(n, s)| (n.clone(), compose_env(s)["AIRLOCK_ROLE"].clone()))
        .collect();
    assert_eq!(
        roles.values().filter(|r| *r == "control").count(),
        1,
        "{roles:?}"
    );
    assert_eq!(
        roles.values().filter(|r| *r == "proxy").count(),
        2,
        "{roles:?}"
    );

    for (name, service) in &services {
        let mut env = compose_env(service);
        // The secret is mounted at /run/secrets/<name>; point the check at a real key file.
        let key_path = env.get("AIRLOCK_MASTER_KEY_FILE").cloned().unwrap();
        let secret = key_path.strip_prefix("/run/secrets/").unwrap();
        assert!(
            service["secrets"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s == secret),
            "{name}: AIRLOCK_MASTER_KEY_FILE names secret {secret} that the service does not mount"
        );
        assert!(compose["secrets"][secret]["file"].is_string());
        env.insert(
            "AIRLOCK_MASTER_KEY_FILE".into(),
            key.to_str().unwrap().into(),
        );
        let out = config_check(&format!("compose service {name}"), &env);
        assert!(out.contains("configuration OK"), "{out}");
        assert!(
            !env.contains_key("AIRLOCK_MASTER_KEY"),
            "{name}: the master key must come from a file, not a variable"
        );

        // Published ports lead to the addresses the process listens on.
        for published in service["ports"].as_array().into_iter().flatten() {
            let published = published.as_str().unwrap();
            let container_port: u16 = published.rsplit(':').next().unwrap().parse().unwrap();
            let listens: Vec<u16> = ["AIRLOCK_API_ADDR", "AIRLOCK_PROXY_ADDR"]
                .iter()
                .filter_map(|k| env.get(*k))
                .map(|a| port_of(a))
                .collect();
            assert!(
                listens.contains(&container_port),
                "{name}: publishes {published} but listens on {listens:?}"
            );
        }
    }

    let control = &services[roles.iter().find(|(_, r)| *r == "control").unwrap().0];
    let control_env = compose_env(control);
    assert_eq!(control_env["AIRLOCK_AUTO_MIGRATE"], "true");

    // The load balancer: a fixed address that the replicas trust, PROXY v2 to each replica's
    // data-plane port, health checks on its operations port.
    let lb = &compose["services"]["lb"];
    let lb_ip = lb["networks"]["airlock"]["ipv4_address"].as_str().unwrap();
    let haproxy = read(&deploy_dir().join("compose/haproxy.cfg"));
    let subnet = compose["networks"]["airlock"]["ipam"]["config"][0]["subnet"]
        .as_str()
        .unwrap();
    for (name, service) in services.iter().filter(|(n, _)| roles[*n] == "proxy") {
        let env = compose_env(service);
        assert_eq!(
            env["AIRLOCK_AUTO_MIGRATE"], "false",
            "{name}: the schema is the control plane's"
        );
        assert_eq!(
            env["AIRLOCK_TRUSTED_PROXIES"],
            format!("{lb_ip}/32"),
            "{name}"
        );
        assert_eq!(env["AIRLOCK_ALLOW_PRIVATE_UPSTREAMS"], subnet, "{name}");
        let proxy_port = port_of(&env["AIRLOCK_PROXY_ADDR"]);
        let ops_port = port_of(&env["AIRLOCK_METRICS_ADDR"]);
        assert!(
            haproxy.contains(&format!("server {name} {name}:{proxy_port}")),
            "haproxy.cfg has no server line for {name}:{proxy_port}"
        );
        assert!(haproxy.contains(&format!("check port {ops_port}")));
        assert!(haproxy.contains("send-proxy-v2"));
        assert!(haproxy.contains("option httpchk GET /readyz"));
        // Compose must wait longer than the drain before it kills.
        let grace: u64 = env["AIRLOCK_SHUTDOWN_GRACE"].parse().unwrap();
        let stop: u64 = service["stop_grace_period"]
            .as_str()
            .unwrap()
            .trim_end_matches('s')
            .parse()
            .unwrap();
        assert!(
            stop > grace,
            "{name}: stop_grace_period {stop}s <= grace {grace}s"
        );
    }

    // Sandboxes are told to use the load balancer.
    let lb_port: u16 = lb["ports"][0]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(haproxy.contains(&format!("bind :{lb_port}")));
    assert_eq!(
        control_env["AIRLOCK_PUBLIC_URL"],
        format!("http://localhost:{lb_port}")
    );
    // The example upstream never reflects a request header back.
    let upstream = read(&deploy_dir().join("compose/upstream.conf"));
    assert!(!upstream.contains("$http_authorization\""));
    assert!(!upstream.contains("'$http_"));
}

// ------------------------------------------------------------------------------------------
// Kubernetes

fn k8s_objects() -> Vec<(String, Value)> {
    let dir = deploy_dir().join("k8s");
    let kustomization = yaml_documents(&dir.join("kustomization.yaml"));
    let resources: Vec<String> = kustomization[0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(scalar)
        .collect();
    // Every manifest in the directory is part of the kustomization, and the other way round.
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml")
        .collect();
    files.sort();
    let mut listed = resources.clone();
    listed.sort();
    assert_eq!(files, listed, "deploy/k8s files vs kustomization resources");
    resources
        .iter()
        .flat_map(|f| {
            yaml_documents(&dir.join(f))
                .into_iter()
                .map(move |d| (f.clone(), d))
        })
        .collect()
}

fn of_kind<'a>(objects: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    objects
        .iter()
        .filter(|(_, o)| o["kind"] == kind)
        .map(|(_, o)| o)
        .collect()
}

fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn kubernetes_manifests_agree_with_the_binary_and_each_other() {
    let objects = k8s_objects();
    for (file, o) in &objects {
        for field in ["apiVersion", "kind"] {
            assert!(o[field].is_string(), "{file}: a document without {field}");
        }
        assert!(o["metadata"]["name"].is_string(), "{file}: unnamed object");
    }
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path());
    let secrets = of_kind(&objects, "Secret");
    let deployments = of_kind(&objects, "Deployment");
    assert_eq!(deployments.len(), 2);

    let mut roles = BTreeMap::new();
    for d in &deployments {
        let name = d["metadata"]["name"].as_str().unwrap();
        let pod = &d["spec"]["template"]["spec"];
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        assert!(
            selects(&d["spec"]["selector"]["matchLabels"], labels),
            "{name}"
        );
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        let containers = pod["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1);
        let c = &containers[0];
        assert_eq!(
            c["securityContext"]["readOnlyRootFilesystem"], true,
            "{name}"
        );
        assert_eq!(
            c["securityContext"]["allowPrivilegeEscalation"], false,
            "{name}"
        );

        // The environment as the pod sees it; secret references resolved against the Secrets.
        let mut env = Env::new();
        for e in c["env"].as_array().unwrap() {
            let key_name = scalar(&e["name"]);
            let value = if let Some(v) = e.get("value") {
                scalar(v)
            } else {
                let r = &e["valueFrom"]["secretKeyRef"];
                let secret = secrets
                    .iter()
                    .find(|s| s["metadata"]["name"] == r["name"])
                    .unwrap_or_else(|| panic!("{name}: {key_name} refers to a missing Secret"));
                scalar(&secret["stringData"][scalar(&r["key"])])
            };
            env.insert(key_name, value);
        }
        assert!(
            !env.contains_key("AIRLOCK_MASTER_KEY"),
            "{name}: key as a variable"
        );

        // The master key file lies in a mounted volume of the master key Secret.
        let key_path = PathBuf::from(&env["AIRLOCK_MASTER_KEY_FILE"]);
        let mount = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| key_path.starts_with(scalar(&m["mountPath"])))
            .unwrap_or_else(|| panic!("{name}: nothing is mounted at {}", key_path.display()));
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        let secret_name = &volume["secret"]["secretName"];
        let secret = secrets
            .iter()
            .find(|s| s["metadata"]["name"] == *secret_name)
            .unwrap();
        let file_name = key_path.file_name().unwrap().to_str().unwrap();
        assert!(secret["stringData"][file_name].is_string(), "{name}");
        assert_eq!(mount["readOnly"], true);

        env.insert(
            "AIRLOCK_MASTER_KEY_FILE".into(),
            key.to_str().unwrap().into(),
        );
        config_check(&format!("Deployment {name}"), &env);
        let role = env["AIRLOCK_ROLE"].clone();

        // Named container ports are the ports the process listens on; probes use them.
        let ports: BTreeMap<String, u16> = c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    scalar(&p["name"]),
                    u16::try_from(p["containerPort"].as_u64().unwrap()).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            ports["ops"],
            port_of(&env["AIRLOCK_METRICS_ADDR"]),
            "{name}"
        );
        let serving = if role == "proxy" {
            ("proxy", "AIRLOCK_PROXY_ADDR")
        } else {
            ("api", "AIRLOCK_API_ADDR")
        };
        assert_eq!(ports[serving.0], port_of(&env[serving.1]), "{name}");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(c["readinessProbe"]["httpGet"]["port"], "ops");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        if role == "proxy" {
            let grace: u64 = env["AIRLOCK_SHUTDOWN_GRACE"].parse().unwrap();
            let kill = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
            assert!(
                kill > grace,
                "{name}: the kubelet kills before the drain ends"
            );
            assert_eq!(env["AIRLOCK_AUTO_MIGRATE"], "false");
        }
        roles.insert(role, (*d).clone());
    }
    let data = &roles["proxy"];
    let data_name = data["metadata"]["name"].as_str().unwrap();
    let data_labels = &data["spec"]["template"]["metadata"]["labels"];
    assert!(roles.contains_key("control"));

    // Services select a Deployment's pods and target one of its named ports.
    for s in of_kind(&objects, "Service") {
        let d = deployments
            .iter()
            .find(|d| {
                selects(
                    &s["spec"]["selector"],
                    &d["spec"]["template"]["metadata"]["labels"],
                )
            })
            .unwrap_or_else(|| panic!("Service {} selects no Deployment", s["metadata"]["name"]));
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        for p in s["spec"]["ports"].as_array().unwrap() {
            assert!(
                c["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|cp| cp["name"] == p["targetPort"]),
                "Service {}: targetPort {}",
                s["metadata"]["name"],
                p["targetPort"]
            );
        }
    }
    // The disruption budget and the autoscaler are the data plane's.
    let pdbs = of_kind(&objects, "PodDisruptionBudget");
    assert_eq!(pdbs.len(), 1);
    assert!(selects(
        &pdbs[0]["spec"]["selector"]["matchLabels"],
        data_labels
    ));
    let replicas = data["spec"]["replicas"].as_u64().unwrap();
    assert!(pdbs[0]["spec"]["minAvailable"].as_u64().unwrap() < replicas);
    let hpas = of_kind(&objects, "HorizontalPodAutoscaler");
    assert_eq!(hpas.len(), 1);
    assert_eq!(hpas[0]["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(hpas[0]["spec"]["scaleTargetRef"]["name"], data_name);

    // Sandboxes may reach the data plane's port and DNS, nothing else.
    let policies = of_kind(&objects, "NetworkPolicy");
    let sandbox = policies
        .iter()
        .find(|p| p["spec"]["policyTypes"] == serde_json::json!(["Egress"]))
        .expect("a NetworkPolicy for sandbox egress");
    let data_port = port_of(
        &data["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "AIRLOCK_PROXY_ADDR")
            .map(|e| scalar(&e["value"]))
            .unwrap(),
    );
    let egress = sandbox["spec"]["egress"].as_array().unwrap();
    assert_eq!(egress.len(), 2, "egress rules: the data plane and DNS");
    assert!(selects(
        &egress[0]["to"][0]["podSelector"]["matchLabels"],
        data_labels
    ));
    assert_eq!(
        egress[0]["ports"][0]["port"].as_u64(),
        Some(u64::from(data_port))
    );
    for rule in &egress[1..] {
        for p in rule["ports"].as_array().unwrap() {
            assert_eq!(p["port"], 53, "only DNS besides the data plane");
        }
    }
}

// ------------------------------------------------------------------------------------------
// Dockerfile and systemd

#[test]
fn dockerfile_is_multi_stage_non_root_and_configured_with_real_settings() {
    let text = read(&deploy_dir().join("Dockerfile"));
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let froms: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .copied()
        .collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    let toolchain = read(&workspace_root().join("rust-toolchain.toml"));
    let version = toolchain
        .lines()
        .find_map(|l| l.strip_prefix("channel = "))
        .unwrap()
        .trim_matches('"');
    let minor = version.rsplit_once('.').map(|(m, _)| m).unwrap_or(version);
    assert!(
        froms[0].contains(&format!("rust:{minor}")),
        "build stage {} vs rust-toolchain.toml {version}",
        froms[0]
    );
    // The runtime stage: after the last FROM.
    let last = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    let runtime = &lines[last..];
    let user = runtime
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    let uid: u32 = user.split(':').next().unwrap().parse().unwrap();
    assert_ne!(uid, 0, "runs as root");
    assert!(!text.contains("openssl"), "no openssl in the image");

    // ENV lines (with continuations) are real settings, and EXPOSE matches their ports.
    let joined = text.replace("\\\n", " ");
    let mut env = Env::new();
    for line in joined.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("ENV ") {
            for pair in rest.split_whitespace() {
                let (k, v) = pair.split_once('=').unwrap();
                env.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    env.insert(
        "AIRLOCK_MASTER_KEY_FILE".into(),
        key_file(dir.path()).to_str().unwrap().into(),
    );
    config_check("Dockerfile ENV", &env);
    let exposed: BTreeSet<u16> = joined
        .lines()
        .filter_map(|l| l.trim().strip_prefix("EXPOSE "))
        .flat_map(|l| l.split_whitespace().map(|p| p.parse::<u16>().unwrap()))
        .collect();
    let listening: BTreeSet<u16> = [
        "AIRLOCK_API_ADDR",
        "AIRLOCK_PROXY_ADDR",
        "AIRLOCK_METRICS_ADDR",
    ]
    .iter()
    .map(|k| port_of(&env[*k]))
    .collect();
    assert_eq!(exposed, listening);
    assert!(
        text.contains(r#"CMD ["/usr/local/bin/airlock", "health"]"#),
        "a HEALTHCHECK through `airlock health` (the image has no shell or curl)"
    );
}

#[test]
fn systemd_unit_and_its_environment_file() {
    let unit = read(&deploy_dir().join("systemd/airlock.service"));
    let env_text = read(&deploy_dir().join("systemd/airlock.env"));
    let mut env: Env = env_text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    assert!(
        !env.contains_key("AIRLOCK_MASTER_KEY") && !env.contains_key("AIRLOCK_MASTER_KEY_FILE")
    );
    // The key comes from the credential directory.
    let setting = unit
        .lines()
        .find_map(|l| l.strip_prefix("Environment=AIRLOCK_MASTER_KEY_FILE="))
        .expect("the unit sets AIRLOCK_MASTER_KEY_FILE");
    let credential = setting.strip_prefix("%d/").expect("a path in %d");
    assert!(unit.contains(&format!("LoadCredential={credential}:")));
    let dir = tempfile::tempdir().unwrap();
    env.insert(
        "AIRLOCK_MASTER_KEY_FILE".into(),
        key_file(dir.path()).to_str().unwrap().into(),
    );
    config_check("systemd airlock.env", &env);
    assert!(unit.contains("ExecStartPre=/usr/local/bin/airlock config check"));
    assert!(unit.contains("ExecStart=/usr/local/bin/airlock serve"));
    let grace: u64 = env["AIRLOCK_SHUTDOWN_GRACE"].parse().unwrap();
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(stop > grace);
    for hardening in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(unit.contains(hardening), "{hardening}");
    }
    // systemd's own parser, where it is installed: it warns (and exits 0) on unknown keys and
    // values it cannot parse, so any output is a failure.
    if let Ok(out) = Command::new("systemd-analyze").arg("--version").output() {
        if out.status.success() {
            let copy = dir.path().join("airlock.service");
            let binary = airlock_binary();
            std::fs::write(
                &copy,
                unit.replace("/usr/local/bin/airlock", binary.to_str().unwrap()),
            )
            .unwrap();
            let out = Command::new("systemd-analyze")
                .arg("verify")
                .arg(&copy)
                .output()
                .unwrap();
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success() && said.trim().is_empty(),
                "systemd-analyze verify:\n{said}"
            );
        }
    } else {
        eprintln!("systemd-analyze not installed: the unit is checked by this test only");
    }
}

/// `airlock config check` refuses what `serve` would: the check the deploy tests rely on fails
/// when it should.
#[test]
fn config_check_refuses_an_unknown_setting_and_a_bad_value() {
    let run = |env: &[(&str, &str)]| {
        let out = Command::new(airlock_binary())
            .args(["config", "check"])
            .env_clear()
            .envs(env.iter().copied())
            .env(
                "AIRLOCK_MASTER_KEY",
                "q2Vx0JqL3m0l2m8r8y6Wb5XyZ0a1b2c3d4e5f6g7h8k=",
            )
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = run(&[("AIRLOCK_TRUSTED_PROXY", "10.0.0.0/8")]);
    assert!(!ok);
    assert!(
        err.contains("AIRLOCK_TRUSTED_PROXY: not a setting Airlock reads (did you mean AIRLOCK_TRUSTED_PROXIES?)"),
        "{err}"
    );
    let (ok, err) = run(&[("AIRLOCK_ROLE", "proxies")]);
    assert!(!ok);
    assert!(err.contains("AIRLOCK_ROLE"), "{err}");
    let (ok, err) = run(&[("AIRLOCK_ROLE", "proxy"), ("AIRLOCK_TEST_ANYTHING", "1")]);
    assert!(ok, "{err}");
}

/// docs/deploy.md walks through every file under deploy/.
#[test]
fn the_deploy_guide_covers_every_file() {
    let guide = read(&workspace_root().join("docs/deploy.md"));
    let mut stack = vec![deploy_dir()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(workspace_root())
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            if rel.ends_with("master.key") {
                continue;
            }
            assert!(
                guide.contains(&rel),
                "docs/deploy.md does not mention {rel}"
            );
        }
    }
}
