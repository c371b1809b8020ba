//! Start-up behaviour of the binary: configuration errors, the generated API secret, `--help`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use streamgate_tests::{binary, free_tcp_port, wait_until, TempDir};

#[test]
fn invalid_configuration_exits_2_with_one_clear_message() {
    let dir = TempDir::new("cfg");
    let bad_file = dir.path().join("bad.toml");
    std::fs::write(&bad_file, "[http]\nlisten = \"0.0.0.0:8080\"\nlisen = 1\n").unwrap();
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (
            vec![("STREAMGATE_HTTP_LISTEN", "not-an-address".into())],
            "STREAMGATE_HTTP_LISTEN",
        ),
        (
            vec![("STREAMGATE_API_SECRET", "short".into())],
            "api.secret",
        ),
        (
            vec![("STREAMGATE_CONFIG", bad_file.display().to_string())],
            "lisen",
        ),
        (
            vec![(
                "STREAMGATE_CONFIG",
                dir.path().join("missing.toml").display().to_string(),
            )],
            "missing.toml",
        ),
        (
            vec![("STREAMGATE_AUTH_OPEN_PUBLISH", "perhaps".into())],
            "STREAMGATE_AUTH_OPEN_PUBLISH",
        ),
        (
            vec![("STREAMGATE_CLUSTER_SECRET", "short".into())],
            "cluster.secret",
        ),
        (
            vec![("STREAMGATE_CLUSTER_ADVERTISE", "no-port".into())],
            "cluster.advertise",
        ),
    ];
    for (env, needle) in cases {
        let out = Command::new(binary())
            .env_clear()
            .env("STREAMGATE_DATA_DIR", dir.path().join("data"))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{env:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{env:?}: {err}");
    }
}

#[test]
fn help_lists_every_setting_with_its_variable() {
    let out = Command::new(binary()).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for var in [
        "STREAMGATE_HTTP_LISTEN",
        "STREAMGATE_DATA_DIR",
        "STREAMGATE_API_SECRET",
        "STREAMGATE_CONFIG",
        "STREAMGATE_LOG_FORMAT",
    ] {
        assert!(text.contains(var), "--help lacks {var}:\n{text}");
    }
}

/// The container files set only variables the server reads.
#[test]
fn the_compose_files_name_only_real_settings() {
    let out = Command::new(binary()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let docker = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker");
    let mut seen = 0;
    for file in ["compose.yaml", "compose.cluster.yaml", "Dockerfile"] {
        let text = std::fs::read_to_string(docker.join(file)).unwrap();
        for (at, _) in text.match_indices("STREAMGATE_") {
            let var: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            assert!(
                help.contains(&var),
                "{file} sets {var}, which --help does not list"
            );
            seen += 1;
        }
    }
    assert!(seen > 20, "{seen}");
}

#[test]
fn generates_the_api_secret_once_with_mode_0600_and_logs_only_its_path() {
    let dir = TempDir::new("secret");
    let data = dir.path().join("data");
    let port = free_tcp_port();
    let run = || {
        let log = dir.path().join("log.txt");
        let mut child = Command::new(binary())
            .env_clear()
            .env("STREAMGATE_CONFIG", "/dev/null")
            .env("STREAMGATE_DATA_DIR", &data)
            .env("STREAMGATE_HTTP_LISTEN", format!("127.0.0.1:{port}"))
            .env("STREAMGATE_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let up = wait_until(Duration::from_secs(10), || {
            streamgate_tests::http::request(
                ([127, 0, 0, 1], port).into(),
                "GET",
                "/healthz",
                &[],
                None,
            )
            .is_ok_and(|r| r.status == 200)
        });
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let status = child.wait().unwrap();
        assert!(
            up,
            "server did not come up: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(
            status.success(),
            "SIGTERM is a clean shutdown, got {status}"
        );
        std::fs::read_to_string(&log).unwrap()
    };
    let first_log = run();
    let path = data.join("api_secret");
    let secret = std::fs::read_to_string(&path).unwrap().trim().to_owned();
    assert!(secret.len() >= 40);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        first_log.contains("api_secret"),
        "the path is logged: {first_log}"
    );
    assert!(!first_log.contains(&secret));
    for line in first_log.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    let second_log = run();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap().trim(),
        secret,
        "kept across restarts"
    );
    assert!(!second_log.contains(&secret));
}
