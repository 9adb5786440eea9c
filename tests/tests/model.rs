//! The cross-instance protocol's model (`tower-cache/src/store/redis/protocol.pml`)
//! and the tracked hit's (`tower-cache/src/store/redis/tracking.pml`),
//! checked exhaustively with Debian's `spin`: no interleaving breaks their
//! invariants, and each rule they rely on, taken out, breaks one.

use std::path::Path;
use std::process::Command;

const MODEL: &str = include_str!("../../tower-cache/src/store/redis/protocol.pml");
const TRACKING: &str = include_str!("../../tower-cache/src/store/redis/tracking.pml");

/// What `pan` said of one model.
struct Verdict {
    errors: u64,
    report: String,
}

/// Generates the verifier for `model`, compiles it and runs the
/// exhaustive search, in a directory of its own.
fn check(name: &str, model: &str) -> Verdict {
    let dir = std::env::temp_dir().join(format!("tower-cache-model-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("model directory");
    std::fs::write(dir.join("protocol.pml"), model).expect("write the model");
    run(&dir, "spin", &["-a", "protocol.pml"]);
    run(
        &dir,
        "cc",
        &["-O2", "-DSAFETY", "-DCOLLAPSE", "-o", "pan", "pan.c"],
    );
    let out = Command::new(dir.join("pan"))
        .arg("-m100000")
        .current_dir(&dir)
        .output()
        .expect("run pan");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    let errors = report
        .split("errors:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("pan gave no verdict:\n{report}"));
    Verdict { errors, report }
}

fn run(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} (Debian's `spin` and a C compiler are needed): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `MODEL` with one rule replaced; the rule must be there.
fn without(rule: &str, instead: &str) -> String {
    assert!(MODEL.contains(rule), "the model no longer has {rule:?}");
    MODEL.replacen(rule, instead, 1)
}

/// The search went through every state and found no error.
fn assert_clean(v: &Verdict) {
    assert_eq!(v.errors, 0, "{}", v.report);
    assert!(
        !v.report.contains("Search not completed"),
        "the search must be exhaustive:\n{}",
        v.report
    );
}

#[test]
fn no_interleaving_breaks_the_protocol() {
    assert_clean(&check("whole", MODEL));
}

#[test]
fn a_write_that_ignores_the_tombstone_serves_the_old_value() {
    let model = without(
        ":: tomb > v0 -> skip\n        :: else ->\n            entry = got;",
        ":: false -> skip\n        :: else ->\n            entry = got;",
    );
    let v = check("no-tombstone", &model);
    assert!(v.errors > 0, "{}", v.report);
    assert!(v.report.contains("assertion violated"), "{}", v.report);
}

#[test]
fn a_load_that_reads_the_counter_after_the_origin_serves_the_old_value() {
    let model = without("    v0 = counter;\n    rounds++;", "    rounds++;").replacen(
        "            leased++\n        :: else\n        fi\n    }\n",
        "            leased++\n        :: else\n        fi\n    }\n    v0 = counter;\n",
        1,
    );
    assert_ne!(
        model,
        without("    v0 = counter;\n    rounds++;", "    rounds++;")
    );
    let v = check("late-version", &model);
    assert!(v.errors > 0, "{}", v.report);
}

#[test]
fn a_release_without_its_token_lets_two_instances_load() {
    let model = without(
        ":: lease == id -> lease = 0\n        :: else\n        fi\n    }\ndone:",
        ":: lease != 0 -> lease = 0\n        :: else\n        fi\n    }\ndone:",
    );
    let v = check("no-token", &model);
    assert!(v.errors > 0, "{}", v.report);
    assert!(v.report.contains("holders"), "{}", v.report);
}

#[test]
fn a_lease_taken_over_a_stored_value_without_a_second_look_loads_it_twice() {
    let model = without(
        ":: lease == id && over -> goto reread",
        ":: lease == id && over -> goto load",
    );
    let v = check("no-reread", &model);
    assert!(v.errors > 0, "{}", v.report);
    assert!(v.report.contains("leased"), "{}", v.report);
}

/// `TRACKING` with one rule replaced; the rule must be there.
fn tracking_without(rule: &str, instead: &str) -> String {
    assert!(TRACKING.contains(rule), "the model no longer has {rule:?}");
    TRACKING.replacen(rule, instead, 1)
}

#[test]
fn no_interleaving_serves_an_invalidated_entry_through_the_tracked_hit() {
    assert_clean(&check("tracking", TRACKING));
}

#[test]
fn a_hit_that_does_not_look_at_the_epoch_after_its_reply_serves_an_invalidated_entry() {
    let model = tracking_without(":: e2 == e -> ck = c", ":: true -> ck = c");
    let v = check("tracking-no-second-look", &model);
    assert!(v.report.contains("assertion violated"), "{}", v.report);
}

#[test]
fn a_counter_read_without_client_caching_serves_an_invalidated_entry() {
    let model = tracking_without("tracked = true;", "skip;");
    let v = check("tracking-untracked", &model);
    assert!(v.report.contains("assertion violated"), "{}", v.report);
}

#[test]
fn a_message_that_does_not_move_the_epoch_serves_an_invalidated_entry() {
    let model = tracking_without(
        ":: kind == MESSAGE -> epoch++; armed = false",
        ":: kind == MESSAGE -> armed = false",
    );
    let v = check("tracking-no-epoch", &model);
    assert!(v.report.contains("assertion violated"), "{}", v.report);
}
