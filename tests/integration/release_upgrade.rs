//! Upgrading a running release in place, as relup does: `host release
//! --add` lays version 0.2.0 (Todo 2.0.0) out beside 0.1.0 (Todo 1.0.0);
//! `bin/todo upgrade 0.2.0` hot-swaps the daemon to it and makes it the
//! version that starts; `downgrade 0.1.0` goes back, handing states down.
//! The release runs from a temp dir with no toolchain on its PATH.

use std::time::Duration;

use crate::support::release::{Daemon, Release};
use crate::support::{Epmd, free_port, request};

const SHORT: Duration = Duration::from_secs(30);
/// An upgrade waits for every list to move before it commits.
const UPGRADE: Duration = Duration::from_secs(120);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_running_daemon_is_upgraded_and_downgraded_keeping_every_list() {
    let epmd = Epmd::start();
    let release = Release::build(&epmd);
    release.add_version("0.2.0", "guest_todo_v2");
    let port = free_port();
    let port_text = port.to_string();
    let env = [
        ("RELEASE_NODE", "upgraded@127.0.0.1"),
        ("RELEASE_COOKIE", "c"),
        ("TODO_PORT", port_text.as_str()),
    ];
    let run = |args: &[&str], limit: Duration| {
        let out = release.run(args, &env, limit);
        assert!(
            out.status.success(),
            "bin/todo {} failed: {}{}",
            args.join(" "),
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    let daemon = {
        let out = release.run(&["daemon"], &env, SHORT);
        assert!(out.status.success(), "daemon failed: {}", text(&out.stderr));
        Daemon::from_ready_line(&out.stdout)
    };
    let entries = |list: &str| {
        request(
            port,
            "GET",
            &format!("/entries?list={list}&date=2023-01-01"),
            &[],
            b"",
        )
        .text()
    };
    for list in ["home", "work", "shop"] {
        for title in ["One", "Two"] {
            let path = format!("/add_entry?list={list}&date=2023-01-01&title={title}");
            assert_eq!(request(port, "POST", &path, &[], b"").status, 200);
        }
    }
    let versions = run(&["versions"], SHORT);
    assert!(versions.contains("* 0.1.0 (starts)"), "{versions}");
    assert!(versions.contains("  0.2.0"), "{versions}");
    assert!(versions.contains("current: 1.0.0"), "{versions}");

    let upgraded = run(&["upgrade", "0.2.0"], UPGRADE);
    assert!(upgraded.contains("runs 2.0.0"), "{upgraded}");
    assert!(upgraded.contains("runs todo 0.2.0"), "{upgraded}");
    for list in ["home", "work", "shop"] {
        assert_eq!(entries(list), "2023-01-01 One\n2023-01-01 Two", "{list}");
    }
    let marked = request(
        port,
        "PUT",
        "/lists/work/entries/2",
        &[("content-type", "application/json")],
        br#"{"done":true}"#,
    );
    assert_eq!(marked.status, 200, "{}", marked.text());
    let versions = run(&["versions"], SHORT);
    assert!(versions.contains("* 0.2.0 (starts)"), "{versions}");
    assert!(versions.contains("current: 2.0.0") && versions.contains("kept:    1.0.0"));

    let downgraded = run(&["downgrade", "0.1.0"], UPGRADE);
    assert!(downgraded.contains("runs todo 0.1.0"), "{downgraded}");
    for list in ["home", "work", "shop"] {
        assert_eq!(entries(list), "2023-01-01 One\n2023-01-01 Two", "{list}");
    }
    let json = request(port, "GET", "/lists/work/entries", &[], b"").text();
    assert!(!json.contains("done"), "1.0.0 shows no marks: {json}");

    // An unknown version is refused and changes nothing.
    let refused = release.run(&["upgrade", "9.9.9"], &env, SHORT);
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("no version 9.9.9"));

    // The version that starts is the last one swapped to.
    run(&["stop"], SHORT);
    assert!(!daemon.alive());
    let restarted = {
        let out = release.run(&["daemon"], &env, SHORT);
        assert!(out.status.success(), "daemon failed: {}", text(&out.stderr));
        Daemon::from_ready_line(&out.stdout)
    };
    assert!(run(&["versions"], SHORT).contains("current: 1.0.0"));
    assert_eq!(entries("home"), "2023-01-01 One\n2023-01-01 Two");
    run(&["stop"], SHORT);
    assert!(!restarted.alive());
}
