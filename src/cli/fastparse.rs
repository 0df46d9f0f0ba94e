//! The command line parsed with only its own subcommand built.
//!
//! clap's derive builds every subcommand and every argument before it parses (about 70 commands
//! and 1,500 arguments here): 0.8 ms of each kiln command, a tenth of a `kiln run --rm IMAGE
//! true`. For the commands below, [`parse`] builds the top level with that one subcommand, made
//! by the same derived `augment_args` as the full tree, and reads the matches with the derived
//! `Cli::from_arg_matches`. Anything it does not accept (a mistake, `--help`, `--version`, a
//! command not listed) returns `None`, and the caller parses again with the whole tree, so
//! every message and help text is clap's full one. The tests check that each listed command's
//! arguments are the full tree's, and that both parses agree on a set of command lines.

use clap::{Args, FromArgMatches};

use super::{
    Cli, build, changes, check, containers, history, images, inspect, lifecycle, load, parse,
    registry, run, save, stats, system,
};

/// The subcommand `name` as the derive builds it, for the commands whose arguments are one
/// `Args` struct; `None` for the others (groups such as `image`, and `completion`).
fn one(name: &str) -> Option<clap::Command> {
    fn of<T: Args>(name: &'static str) -> clap::Command {
        T::augment_args(clap::Command::new(name))
    }
    Some(match name {
        "build" => of::<build::Args>("build"),
        "run" => of::<run::Args>("run"),
        "create" => of::<run::Args>("create"),
        "ps" => of::<containers::PsArgs>("ps"),
        "exec" => of::<containers::ExecArgs>("exec"),
        "logs" => of::<containers::LogsArgs>("logs"),
        "stop" => of::<containers::StopArgs>("stop"),
        "kill" => of::<containers::KillArgs>("kill"),
        "wait" => of::<containers::WaitArgs>("wait"),
        "start" => of::<lifecycle::StartArgs>("start"),
        "restart" => of::<lifecycle::RestartArgs>("restart"),
        "attach" => of::<lifecycle::AttachArgs>("attach"),
        "pause" => of::<lifecycle::PauseArgs>("pause"),
        "unpause" => of::<lifecycle::PauseArgs>("unpause"),
        "rm" => of::<containers::RmArgs>("rm"),
        "rename" => of::<containers::RenameArgs>("rename"),
        "diff" => of::<changes::DiffArgs>("diff"),
        "commit" => of::<changes::CommitArgs>("commit"),
        "cp" => of::<changes::CpArgs>("cp"),
        "export" => of::<changes::ExportArgs>("export"),
        "import" => of::<changes::ImportArgs>("import"),
        "top" => of::<stats::TopArgs>("top"),
        "port" => of::<containers::PortArgs>("port"),
        "stats" => of::<stats::StatsArgs>("stats"),
        "images" => of::<images::ImagesArgs>("images"),
        "pull" => of::<registry::PullArgs>("pull"),
        "push" => of::<registry::PushArgs>("push"),
        "login" => of::<registry::LoginArgs>("login"),
        "logout" => of::<registry::LogoutArgs>("logout"),
        "tag" => of::<images::TagArgs>("tag"),
        "rmi" => of::<images::RmiArgs>("rmi"),
        "inspect" => of::<inspect::Args>("inspect"),
        "history" => of::<history::Args>("history"),
        "save" => of::<save::Args>("save"),
        "load" => of::<load::Args>("load"),
        "version" => of::<system::VersionArgs>("version"),
        "info" => of::<system::InfoArgs>("info"),
        "parse" => of::<parse::Args>("parse"),
        "check" => of::<check::Args>("check"),
        _ => return None,
    })
}

/// `--root`, as the derive makes it from [`Cli`]'s field.
fn root_arg() -> clap::Arg {
    clap::Arg::new("root")
        .long("root")
        .global(true)
        .value_name("DIR")
        .action(clap::ArgAction::Set)
        .value_parser(clap::value_parser!(std::path::PathBuf))
}

/// `args` (the program's name first) parsed with only subcommand `name` built; `None` when
/// the whole tree must parse them (see the module's doc).
pub fn parse(args: &[String], name: &str) -> Option<Cli> {
    let sub = one(name)?;
    let top = clap::Command::new("kiln").arg(root_arg()).subcommand(sub);
    let matches = top.try_get_matches_from(args).ok()?;
    Cli::from_arg_matches(&matches).ok()
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    const NAMES: [&str; 39] = [
        "build", "run", "create", "ps", "exec", "logs", "stop", "kill", "wait", "start", "restart",
        "attach", "pause", "unpause", "rm", "rename", "diff", "commit", "cp", "export", "import",
        "top", "port", "stats", "images", "pull", "push", "login", "logout", "tag", "rmi",
        "inspect", "history", "save", "load", "version", "info", "parse", "check",
    ];

    /// What parsing depends on, without the help texts.
    fn shape(a: &clap::Arg) -> String {
        format!(
            "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {} {} {} {} {:?} {:?}",
            a.get_id(),
            a.get_long(),
            a.get_short(),
            a.get_action(),
            a.get_num_args(),
            a.get_value_names(),
            a.get_all_aliases(),
            a.is_global_set(),
            a.is_required_set(),
            a.is_last_set(),
            a.is_trailing_var_arg_set(),
            a.get_default_values(),
            a.get_value_delimiter(),
        )
    }

    #[test]
    fn each_command_has_the_full_trees_arguments() {
        let full = Cli::command();
        for name in NAMES {
            let fast = one(name).unwrap_or_else(|| panic!("{name} has no fast path"));
            let whole = full
                .find_subcommand(name)
                .unwrap_or_else(|| panic!("{name} is not a command"));
            let shapes = |c: &clap::Command| c.get_arguments().map(shape).collect::<Vec<_>>();
            assert_eq!(shapes(&fast), shapes(whole), "{name}");
            assert_eq!(
                fast.is_allow_external_subcommands_set(),
                whole.is_allow_external_subcommands_set(),
                "{name}"
            );
            assert_eq!(
                fast.is_subcommand_required_set(),
                whole.is_subcommand_required_set(),
                "{name}"
            );
        }
        let root = full.get_arguments().find(|a| a.get_id() == "root").unwrap();
        assert_eq!(shape(&root_arg()), shape(root));
        // Every command of the tree that is one `Args` struct has a fast path (a new command is
        // added to `one` too, or it silently parses the slow way).
        for c in full.get_subcommands() {
            let name = c.get_name();
            let group = c.has_subcommands() || matches!(name, "completion" | "manpages");
            assert_eq!(one(name).is_some(), !group, "{name}");
        }
    }

    #[test]
    fn both_parses_agree() {
        let lines = [
            "kiln run --rm busybox true",
            "kiln --root /tmp/s run -d -p 8080:80 -v data:/data --name web app",
            "kiln run --root /r -it --network none -e A=1 --env B img sh -c 'echo hi'",
            "kiln run img ls --help -la",
            "kiln run --rm --mount type=tmpfs,dst=/t --memory 64m --pids-limit 10 img",
            "kiln create --name c -w /srv img cmd arg",
            "kiln build -t app --build-arg A=1 --platform linux/amd64,linux/arm64 .",
            "kiln build -f Dockerfile.dev --target dev --no-cache -q ctx",
            "kiln ps -a --format {{.Names}} --filter status=exited",
            "kiln exec -it -u 1000 -w /tmp c sh -c true",
            "kiln logs -f --tail 10 c",
            "kiln stop -t 3 a b",
            "kiln kill -s HUP c",
            "kiln rm -fv a b c",
            "kiln inspect -f {{.Id}} --type image app",
            "kiln images -q --no-trunc",
            "kiln pull --platform linux/arm64 localhost:5000/a:b",
            "kiln push -q --platform linux/arm64 r/x",
            "kiln tag a b:c",
            "kiln rmi -f a",
            "kiln save -o out.tar a b",
            "kiln load -i in.tar",
            "kiln cp c:/etc/hosts -",
            "kiln commit -c 'ENV A=1' c img",
            "kiln history --no-trunc app",
            "kiln version --format json",
            "kiln --root=/x info",
            "kiln parse --format tree -f Dockerfile",
            "kiln port c 80/tcp",
            "kiln start -a c",
            "kiln wait c",
        ];
        for line in lines {
            let args: Vec<String> = shlex(line);
            let name = args[1..]
                .iter()
                .scan(false, |skip, a| {
                    let out = (!*skip && !a.starts_with('-')).then(|| a.clone());
                    *skip = a == "--root";
                    Some(out)
                })
                .flatten()
                .next()
                .unwrap();
            let fast = parse(&args, &name).unwrap_or_else(|| panic!("fast parse of {line}"));
            let full = Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(format!("{fast:?}"), format!("{full:?}"), "{line}");
        }
        // A mistake, help and version are the full tree's to say.
        for (line, name) in [
            ("kiln run --no-such-flag img", "run"),
            ("kiln run --help", "run"),
            ("kiln --version run", "run"),
            ("kiln ps --format", "ps"),
            ("kiln image ls", "image"),
        ] {
            assert!(parse(&shlex(line), name).is_none(), "{line}");
        }
    }

    /// Splits like a shell: spaces, and single quotes around a word.
    fn shlex(line: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        for ch in line.chars() {
            match ch {
                '\'' => quoted = !quoted,
                ' ' if !quoted => out.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        out.push(cur);
        out.retain(|s| !s.is_empty());
        out
    }
}
