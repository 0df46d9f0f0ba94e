//! podman as a peer the tests compare kiln with, isolated from the machine's settings.

use std::process::Command;

/// podman with settings and storage of its own (runc, cgroupfs, vfs; rlimits within the hard
/// ones), so the test depends on nothing of the machine's.
pub struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    pub fn new() -> Podman {
        let dir = tempfile::tempdir().unwrap();
        let hard = |flag: &str| {
            let out = Command::new("sh")
                .args(["-c", &format!("ulimit -H{flag}")])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u64>()
                .map_or(32768, |n| n.min(32768))
        };
        std::fs::write(
            dir.path().join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile={n}:{n}\", \"nproc={u}:{u}\"]\n\
                 [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
                n = hard("n"),
                u = hard("u")
            ),
        )
        .unwrap();
        Podman { dir }
    }

    /// `tool` (podman or buildah) with this storage; panics naming the command on failure.
    pub fn ok(&self, tool: &str, args: &[&str]) -> String {
        let out = Command::new(tool)
            .env("CONTAINERS_CONF", self.dir.path().join("containers.conf"))
            .args(["--storage-driver", "vfs", "--root"])
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Default for Podman {
    fn default() -> Self {
        Podman::new()
    }
}
