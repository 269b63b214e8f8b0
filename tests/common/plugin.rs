//! Finding the built plugin, for tests that run GStreamer's tools or other processes.

use std::path::PathBuf;
use std::process::Command;

/// Where `libgstordered.so` is: `GST_ORDERED_PLUGIN_DIR` (meson points it at the plugin it
/// built), else the cargo profile folder this test binary was built in, where the cdylib is
/// brought up to date first (`cargo test` builds only the rlib; a stale plugin would test
/// old code).
pub fn plugin_dir() -> PathBuf {
    static DIR: std::sync::LazyLock<PathBuf> = std::sync::LazyLock::new(|| {
        if let Some(dir) = std::env::var_os("GST_ORDERED_PLUGIN_DIR") {
            return PathBuf::from(dir);
        }
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        {
            let target_dir = profile_dir.parent().unwrap();
            let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            build
                .args([
                    "build",
                    "--lib",
                    "--manifest-path",
                    concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
                ])
                .arg("--target-dir")
                .arg(target_dir);
            if profile_dir.file_name().is_some_and(|p| p == "release") {
                build.arg("--release");
            }
            let status = build.status().expect("cargo runs");
            assert!(status.success(), "building libgstordered.so failed");
        }
        profile_dir
    });
    let dir = DIR.clone();
    assert!(
        dir.join("libgstordered.so").exists(),
        "libgstordered.so not found in {}",
        dir.display()
    );
    dir
}

pub fn gst_command(tool: &str) -> Command {
    let mut cmd = Command::new(tool);
    let registry =
        std::env::temp_dir().join(format!("gst-ordered-registry-{}.bin", std::process::id()));
    cmd.env("GST_PLUGIN_PATH", plugin_dir())
        .env("GST_REGISTRY", registry);
    cmd
}
