//! Finding the built plugin, for tests that run GStreamer's tools or other processes.

use std::path::PathBuf;
use std::process::Command;

/// Where `libgstordered.so` is: `GST_ORDERED_PLUGIN_DIR` (meson points it at the plugin it
/// built), else a cargo build of the cdylib brought up to date first (`cargo test` builds
/// only the rlib, and a stale plugin would test old code). That build has a target folder of
/// its own (`plugin-for-tests` beside the profile folders) so that it and `cargo test` do
/// not rebuild each other's artifacts.
pub fn plugin_dir() -> PathBuf {
    static DIR: std::sync::LazyLock<PathBuf> = std::sync::LazyLock::new(|| {
        if let Some(dir) = std::env::var_os("GST_ORDERED_PLUGIN_DIR") {
            return PathBuf::from(dir);
        }
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap();
        let profile = profile_dir.file_name().unwrap().to_owned();
        let target_dir = profile_dir.parent().unwrap().join("plugin-for-tests");
        let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        build
            .args([
                "build",
                "--locked",
                "--lib",
                "--manifest-path",
                concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
            ])
            .arg("--target-dir")
            .arg(&target_dir);
        // Without the variables cargo set for this test binary (CARGO_PKG_NAME…): build
        // scripts that watch them would otherwise rebuild their crates every time. Cargo's
        // own settings (CARGO_HOME, CARGO_NET_OFFLINE, …) stay.
        for (key, _) in std::env::vars_os() {
            if let Some(key) = key.to_str()
                && [
                    "CARGO_PKG_",
                    "CARGO_MANIFEST_",
                    "CARGO_CRATE_",
                    "CARGO_BIN_",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_TARGET_DIR",
                ]
                .iter()
                .any(|p| key.starts_with(p))
            {
                build.env_remove(key);
            }
        }
        if profile == "release" {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building libgstordered.so failed");
        target_dir.join(profile)
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
