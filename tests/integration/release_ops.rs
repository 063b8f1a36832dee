//! Operating a built release beyond the seed's walk-through: where nodes
//! keep their data and logs, configuration through env.sh and vm.args,
//! `eval`, `restart`, the kernel check, a daemon that cannot start, and
//! tab completion in the console.

use std::time::Duration;

use crate::support::release::{Daemon, Release, Terminal};
use crate::support::{Epmd, free_port, request};

const SHORT: Duration = Duration::from_secs(30);

/// The permission bits of `path`.
fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Starts a daemon of `release` with `env`; it must come up.
fn daemon(release: &Release, env: &[(&str, &str)]) -> Daemon {
    let out = release.run(&["daemon"], env, SHORT);
    assert!(out.status.success(), "daemon failed: {}", text(&out.stderr));
    Daemon::from_ready_line(&out.stdout)
}

#[test]
fn two_nodes_of_one_release_keep_their_own_data_and_logs() {
    let epmd = Epmd::start();
    let release = Release::build(&epmd);
    let (port_x, port_y) = (free_port().to_string(), free_port().to_string());
    let env_x = [
        ("RELEASE_NODE", "node_x@127.0.0.1"),
        ("RELEASE_COOKIE", "c"),
        ("TODO_PORT", port_x.as_str()),
    ];
    let env_y = [
        ("RELEASE_NODE", "node_y@127.0.0.1"),
        ("RELEASE_COOKIE", "c"),
        ("TODO_PORT", port_y.as_str()),
    ];
    let x = daemon(&release, &env_x);
    let y = daemon(&release, &env_y);
    let add = |port: &str, title: &str| {
        let port: u16 = port.parse().expect("port");
        let path = format!("/add_entry?list=mine&date=2023-01-01&title={title}");
        assert_eq!(request(port, "POST", &path, &[], b"").status, 200);
    };
    add(&port_x, "X");
    add(&port_y, "Y");
    let entries = |port: &str| {
        let port: u16 = port.parse().expect("port");
        request(port, "GET", "/entries?list=mine&date=2023-01-01", &[], b"").text()
    };
    assert_eq!(entries(&port_x), "2023-01-01 X");
    assert_eq!(entries(&port_y), "2023-01-01 Y");
    for node in ["node_x@127.0.0.1", "node_y@127.0.0.1"] {
        assert!(
            release.root.join("data").join(node).join("db").is_dir(),
            "{node}'s data"
        );
        let log = release
            .root
            .join("tmp")
            .join("log")
            .join(node)
            .join("host.log");
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            logged.contains(&format!("node={node}")),
            "{}: {logged}",
            log.display()
        );
        // Data, logs and the file meant for the cookie are their owner's.
        let data = release.root.join("data").join(node);
        let log_dir = log.parent().expect("log dir").to_path_buf();
        for (path, mode) in [(data, 0o700), (log_dir, 0o700), (log, 0o600)] {
            assert_eq!(mode_of(&path), mode, "{}", path.display());
        }
    }
    let env_sh = release.root.join("releases").join("0.1.0").join("env.sh");
    assert_eq!(mode_of(&env_sh), 0o600, "{}", env_sh.display());
    for env in [&env_x, &env_y] {
        let stopped = release.run(&["stop"], env, SHORT);
        assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    }
    assert!(!x.alive() && !y.alive());
}

#[test]
fn env_sh_and_vm_args_configure_the_node_as_in_a_mix_release() {
    let epmd = Epmd::start();
    let release = Release::build(&epmd);
    let port = free_port();
    // Drill 3: the node's name and cookie in vm.args; the port in env.sh.
    let version = release.root.join("releases").join("0.1.0");
    let vm_args = std::fs::read_to_string(version.join("vm.args")).expect("vm.args");
    std::fs::write(
        version.join("vm.args"),
        format!("{vm_args}\n--node node_v@127.0.0.1\n--cookie secret\n"),
    )
    .expect("write vm.args");
    let env_sh = std::fs::read_to_string(version.join("env.sh")).expect("env.sh");
    std::fs::write(
        version.join("env.sh"),
        format!("{env_sh}\nexport TODO_PORT=${{TODO_PORT:-{port}}}\n"),
    )
    .expect("write env.sh");
    let node = daemon(&release, &[]);
    let said = release.run(&["rpc", "nodes"], &[], SHORT);
    assert!(
        text(&said.stdout).contains("node_v@127.0.0.1"),
        "{}{}",
        text(&said.stdout),
        text(&said.stderr)
    );
    assert_eq!(
        request(port, "GET", "/entries?list=a&date=2023-01-01", &[], b"").status,
        200
    );
    let wrong = release.run(&["rpc", "nodes"], &[("RELEASE_COOKIE", "other")], SHORT);
    assert!(!wrong.status.success() && text(&wrong.stderr).contains("the cookies differ"));
    assert_eq!(
        text(&release.run(&["version"], &[], SHORT).stdout).trim(),
        "todo 0.1.0"
    );

    // restart: the same node, a new OS process, its data kept.
    let added = release.run(
        &[
            "rpc",
            r#"todo.add-entry("a", {date: "2023-01-01", title: "kept"})"#,
        ],
        &[],
        SHORT,
    );
    assert!(added.status.success(), "{}", text(&added.stderr));
    let restarted = release.run(&["restart"], &[], SHORT);
    assert!(restarted.status.success(), "{}", text(&restarted.stderr));
    let again = Daemon::from_ready_line(&restarted.stdout);
    assert_ne!(again.pid, node.pid);
    assert!(!node.alive());
    assert_eq!(
        request(port, "GET", "/entries?list=a&date=2023-01-01", &[], b"").text(),
        "2023-01-01 kept"
    );
    assert!(release.run(&["stop"], &[], SHORT).status.success());
}

#[test]
fn eval_runs_on_a_stopped_node_and_is_refused_while_it_runs() {
    let epmd = Epmd::start();
    let release = Release::build(&epmd);
    let port = free_port().to_string();
    let env = [
        ("RELEASE_NODE", "node_e@127.0.0.1"),
        ("RELEASE_COOKIE", "c"),
        ("TODO_PORT", port.as_str()),
    ];
    let add = r#"todo.add-entry("evaluated", {date: "2023-01-01", title: "offline"})"#;
    let added = release.run(&["eval", add], &env, SHORT);
    assert!(added.status.success(), "{}", text(&added.stderr));
    assert!(
        text(&added.stdout).contains("ok({id: 1"),
        "{}",
        text(&added.stdout)
    );

    let node = daemon(&release, &env);
    let refused = release.run(&["eval", "ps"], &env, SHORT);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("in use by another running node"),
        "{}",
        text(&refused.stderr)
    );
    let listed = release.run(&["rpc", r#"todo.entries("evaluated")"#], &env, SHORT);
    assert!(
        text(&listed.stdout).contains("offline"),
        "{}",
        text(&listed.stdout)
    );
    assert!(release.run(&["stop"], &env, SHORT).status.success());
    assert!(!node.alive());
}

#[test]
fn a_node_that_cannot_start_fails_plainly() {
    let epmd = Epmd::start();
    let release = Release::build(&epmd);
    // The HTTP port is taken: the daemon fails, with its log's tail.
    let taken = std::net::TcpListener::bind("0.0.0.0:0").expect("a port");
    let port = taken.local_addr().expect("addr").port().to_string();
    let env = [
        ("RELEASE_NODE", "node_f@127.0.0.1"),
        ("RELEASE_COOKIE", "c"),
        ("TODO_PORT", port.as_str()),
    ];
    let failed = release.run(&["daemon"], &env, SHORT);
    assert!(!failed.status.success());
    let said = text(&failed.stderr);
    assert!(said.contains("the node did not start"), "{said}");
    assert!(
        said.contains("already in use"),
        "the log's tail says why: {said}"
    );

    // The node sizes its pool from the kernel's limits: an instance count
    // the mappings cannot hold is refused at start, naming the limit.
    let have: u64 = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0);
    let vm_args = release.root.join("big.args");
    let original =
        std::fs::read_to_string(release.root.join("releases/0.1.0/vm.args")).expect("vm.args");
    assert!(original.contains("## --max-instances 8192"), "{original}");
    std::fs::write(
        &vm_args,
        original.replace("## --max-instances 8192", "--max-instances 100000"),
    )
    .expect("write");
    let vm_args = vm_args.display().to_string();
    let free = free_port().to_string();
    let big = [
        ("RELEASE_NODE", "node_f@127.0.0.1"),
        ("RELEASE_COOKIE", "c"),
        ("TODO_PORT", free.as_str()),
        ("RELEASE_VM_ARGS", vm_args.as_str()),
    ];
    if have < 700_000 {
        let refused = release.run(&["start"], &big, SHORT);
        assert!(!refused.status.success());
        let said = text(&refused.stderr);
        assert!(
            said.contains(&format!("the kernel allows {have} (vm.max_map_count)")),
            "{said}"
        );
        assert!(said.contains("sudo sysctl -w vm.max_map_count="), "{said}");
        assert!(said.contains("Lower --max-instances"), "{said}");
    }
    let unknown = release.run(&["bogus"], &env, SHORT);
    assert!(!unknown.status.success());
    assert!(text(&unknown.stderr).contains("unknown command: bogus"));
}

#[test]
fn the_console_completes_commands_and_functions() {
    let epmd = Epmd::start();
    let release = Release::build(&epmd);
    let port = free_port().to_string();
    let env = [
        ("RELEASE_NODE", "node_t@127.0.0.1"),
        ("RELEASE_COOKIE", "c"),
        ("TODO_PORT", port.as_str()),
    ];
    let node = daemon(&release, &env);
    let mut console = Terminal::spawn(release.command(&["remote"], &env));
    console.expect("node_t@127.0.0.1> ", SHORT);
    // "func" + Tab completes to the command; Enter runs it.
    console.send_raw("func\t");
    console.expect("functions", SHORT);
    console.send_raw("\r");
    console.expect("todo.add-entry(list: string", SHORT);
    // "todo.ent" + Tab completes to the function.
    console.send_raw("todo.ent\t");
    console.expect("todo.entries(", SHORT);
    console.send_raw("\"nobody\")\r");
    console.expect("ok([])", SHORT);
    // History: the line comes back with the up arrow.
    console.send_raw("\x1b[A");
    console.expect("todo.entries(\"nobody\")", SHORT);
    console.send_raw("\x15exit\r");
    assert!(console.wait(SHORT).success(), "{}", console.text());
    assert!(node.alive(), "exit leaves the node running");
    assert!(release.run(&["stop"], &env, SHORT).status.success());
}
