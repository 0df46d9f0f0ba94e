//! docker's management command forms, read as the commands they name: `kiln image ls` is
//! `kiln images`, `kiln container rm` is `kiln rm`, `kiln image inspect` is `kiln inspect
//! --type image`. The rewrite happens on the words before clap parses them, so each form has
//! exactly the flags, help and output of the command it names. `image prune`, `container
//! prune` and `system df|prune` are commands of their own.

/// `(group, verb)` → the words that replace them.
const FORMS: &[(&str, &[&str], &[&str])] = &[
    ("image", &["ls", "list"], &["images"]),
    ("image", &["rm", "remove"], &["rmi"]),
    ("image", &["inspect"], &["inspect", "--type", "image"]),
    ("image", &["history"], &["history"]),
    ("image", &["tag"], &["tag"]),
    ("image", &["pull"], &["pull"]),
    ("image", &["push"], &["push"]),
    ("image", &["save"], &["save"]),
    ("image", &["load"], &["load"]),
    ("image", &["import"], &["import"]),
    ("image", &["build"], &["build"]),
    ("container", &["ls", "list", "ps"], &["ps"]),
    ("container", &["rm", "remove"], &["rm"]),
    (
        "container",
        &["inspect"],
        &["inspect", "--type", "container"],
    ),
    (
        "container",
        &[
            "run", "exec", "logs", "start", "stop", "restart", "kill", "wait", "attach", "pause",
            "unpause", "top", "stats", "diff", "commit", "cp", "export", "rename",
        ],
        &[],
    ),
];

/// `args` (the program name first) with a management form replaced by the command it names.
pub fn rewrite(args: Vec<String>) -> Vec<String> {
    // The subcommand: the first word that is not an option or the value of `--root`.
    let mut i = 1;
    while i < args.len() {
        if args[i] == "--root" {
            i += 2;
        } else if args[i].starts_with('-') {
            i += 1;
        } else {
            break;
        }
    }
    let (Some(group), Some(verb)) = (args.get(i), args.get(i + 1)) else {
        return args;
    };
    for (g, verbs, to) in FORMS {
        if group == g && verbs.contains(&verb.as_str()) {
            let replacement: Vec<String> = if to.is_empty() {
                vec![verb.clone()]
            } else {
                to.iter().map(|s| s.to_string()).collect()
            };
            let mut out = args[..i].to_vec();
            out.extend(replacement);
            out.extend(args[i + 2..].iter().cloned());
            return out;
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn docker_management_forms() {
        let r = |s: &str| rewrite(words(s)).join(" ");
        assert_eq!(r("kiln image ls -q"), "kiln images -q");
        assert_eq!(r("kiln --root /x image rm a"), "kiln --root /x rmi a");
        assert_eq!(r("kiln image inspect a"), "kiln inspect --type image a");
        assert_eq!(r("kiln container ls -a"), "kiln ps -a");
        assert_eq!(r("kiln container logs -f c"), "kiln logs -f c");
        assert_eq!(r("kiln container prune -f"), "kiln container prune -f");
        assert_eq!(r("kiln image prune"), "kiln image prune");
        assert_eq!(r("kiln run image ls"), "kiln run image ls");
        assert_eq!(r("kiln images"), "kiln images");
    }
}
