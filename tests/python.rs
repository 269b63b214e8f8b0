//! Applications in Python: runs the PyGObject scripts in tests/python with Debian's
//! python3 (which has the GStreamer bindings) against the built plugin.

#[path = "common/plugin.rs"]
mod plugin;

use plugin::gst_command;

#[test]
fn python_application_attaches_results_through_the_process_signal() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/process_signal.py"
    );
    let out = gst_command("/usr/bin/python3")
        .arg(script)
        .output()
        .expect("/usr/bin/python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("60 frames in order with their results"),
        "{stdout}"
    );
}
