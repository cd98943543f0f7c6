//! The repository config file, `vexil.yaml` at the flags root: which clients the repository
//! serves (the mirrors whose findings `vexil validate` reports), for every namespace or per
//! namespace. It travels with the flags through every source (a directory, a git ref, a
//! remote) as one more file of the revision, and is compiled with them into the `Snapshot`.
//!
//! Client names are the mirrors' names, which live in `vexil-mirror` (the core does not know
//! the mirrors): the caller hands the list in (`CompileOptions::clients`) and the core checks
//! names against it, keeping them as validated text.

use std::collections::BTreeMap;

use crate::decode::{self, closest};
use crate::diag::{Code, Pos, Sink};
use crate::snapshot::{Flag, Origin};
use crate::yaml::Node;

/// The config file's path, relative to the flags root.
pub const CONFIG_FILE: &str = "vexil.yaml";

const CONFIG_FIELDS: &[&str] = &["clients", "namespaces"];
const NAMESPACE_FIELDS: &[&str] = &["clients"];

/// What `vexil.yaml` declares. The default (no file) declares nothing: every client counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoConfig {
    /// The clients of every namespace without its own list; `None`: not declared.
    pub clients: Option<Clients>,
    /// Per-namespace lists, by namespace name.
    pub namespaces: BTreeMap<String, NamespaceConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceConfig {
    pub clients: Option<Clients>,
    /// Where the namespace is named in the config file.
    pub origin: Origin,
}

/// A declared list of client names (each a name from `CompileOptions::clients` when one was
/// handed in), in written order without duplicates, and where it was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clients {
    pub names: Vec<Box<str>>,
    pub origin: Origin,
}

impl RepoConfig {
    /// The clients declared for `namespace`: its own list, else the repository's; `None` when
    /// neither declares one (then every client counts).
    pub fn clients_of(&self, namespace: &str) -> Option<&Clients> {
        self.namespaces
            .get(namespace)
            .and_then(|ns| ns.clients.as_ref())
            .or(self.clients.as_ref())
    }

    /// Whether `client` reads `flag` of `namespace`: the flag's own `clients:` list when it has
    /// one, else the namespace's or the repository's (always, without any declaration).
    pub fn declares_flag(&self, namespace: &str, flag: &Flag, client: &str) -> bool {
        match &flag.clients {
            Some(names) => names.iter().any(|n| &**n == client),
            None => self.declares(namespace, client),
        }
    }

    /// Whether `client` is declared for `namespace` (always, without a declaration).
    pub fn declares(&self, namespace: &str, client: &str) -> bool {
        self.clients_of(namespace)
            .is_none_or(|c| c.names.iter().any(|n| &**n == client))
    }
}

/// True for a path the config file's name reserves: `vexil.yaml` or `vexil.yml` in any
/// directory (any case). Only `CONFIG_FILE` itself is read as the config; the others are errors
/// (`misplaced_config`), never flag files.
pub fn is_reserved(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    name == "vexil.yaml" || name == "vexil.yml"
}

/// The error for a reserved name that is not the config file.
pub(crate) fn misplaced(sink: &mut Sink<'_>) {
    sink.error(
        Pos::START,
        Code::MisplacedConfig,
        format!(
            "`{}` is reserved for the repository config file, which is `{CONFIG_FILE}` at the flags root: this file is read neither as config nor as flags; rename or move it",
            sink.file
        ),
    );
}

/// The config file's tree to a `RepoConfig`, checking client names against `known` (when
/// handed in). Namespace names are checked by `compile`, which knows the namespaces.
pub(crate) fn decode(sink: &mut Sink<'_>, root: &Node, known: Option<&[&str]>) -> RepoConfig {
    let mut config = RepoConfig::default();
    let Some(mut f) = decode::fields(sink, root, "the repository config file") else {
        return config;
    };
    if let Some(n) = f.take("clients") {
        config.clients = clients(sink, n, "`clients`", known);
    }
    if let Some(n) = f.take("namespaces") {
        for (name, pos, node) in decode::named_entries(sink, n, "`namespaces`") {
            if !decode::check_key(sink, &name, pos, "namespace") {
                continue;
            }
            let Some(mut nf) = decode::fields(sink, node, &format!("namespace `{name}`")) else {
                continue;
            };
            let clients = nf
                .take("clients")
                .and_then(|n| clients(sink, n, &format!("`clients` of `{name}`"), known));
            nf.finish(sink, &format!("namespace `{name}`"), NAMESPACE_FIELDS);
            let origin = Origin {
                file: sink.file.to_owned(),
                pos,
            };
            config
                .namespaces
                .insert(name, NamespaceConfig { clients, origin });
        }
    }
    // A flag file named `vexil.yaml` (from before the name was reserved) deserves more than
    // "unknown field".
    for field in ["namespace", "segments", "flags"] {
        if let (Some(pos), Some(_)) = (f.key_pos(field), f.take(field)) {
            sink.error(
                pos,
                Code::UnknownField,
                format!("`{field}` in the repository config file: `{CONFIG_FILE}` at the flags root holds settings, not flags; move flags and segments to another file"),
            );
        }
    }
    f.finish(sink, "the repository config file", CONFIG_FIELDS);
    config
}

pub(crate) fn clients(
    sink: &mut Sink<'_>,
    node: &Node,
    what: &str,
    known: Option<&[&str]>,
) -> Option<Clients> {
    let list = decode::texts(sink, node, what)?;
    let mut names: Vec<Box<str>> = Vec::with_capacity(list.len());
    for (name, pos) in list {
        if let Some(known) = known.filter(|k| !k.contains(&name.as_str())) {
            let hint = match closest(&name, known) {
                Some(best) => format!("did you mean `{best}`?"),
                None => format!("known clients: {}", known.join(", ")),
            };
            sink.error(
                pos,
                Code::UnknownClient,
                format!("unknown client `{name}` in {what}: {hint}"),
            );
        } else if names.iter().any(|n| **n == *name) {
            sink.error(
                pos,
                Code::DuplicateKey,
                format!("client `{name}` is listed twice in {what}"),
            );
        } else {
            names.push(name.into());
        }
    }
    Some(Clients {
        names,
        origin: Origin {
            file: sink.file.to_owned(),
            pos: node.pos,
        },
    })
}

/// Warns of namespaces the config names that no flag file defines (a typo would silently
/// declare nothing). A warning, not an error: deleting a namespace's last flag must not
/// block the revision that does it.
pub(crate) fn check_namespaces(sink: &mut Sink<'_>, config: &RepoConfig, defined: &[&str]) {
    for (name, ns) in &config.namespaces {
        if defined.contains(&name.as_str()) {
            continue;
        }
        let hint = match closest(name, defined) {
            Some(best) => format!("did you mean `{best}`?"),
            None => format!("namespaces: {}", defined.join(", ")),
        };
        sink.warning(
            ns.origin.pos,
            Code::UnknownNamespace,
            format!("namespace `{name}` in the repository config has no flag file: {hint}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::CompileOptions;
    use crate::source::from_memory;

    const FLAGS: &str = "flags:\n  a: { default: true }\n";
    const CHECKOUT: &str = "namespace: checkout\nflags:\n  b: { default: true }\n";
    const KNOWN: &[&str] = &["flipper", "unleash", "unleash-legacy"];

    fn compile(config: &str) -> crate::Compiled {
        let loaded = from_memory([
            ("a.yaml", FLAGS),
            ("checkout/b.yaml", CHECKOUT),
            ("vexil.yaml", config),
        ]);
        let options = CompileOptions {
            clients: Some(KNOWN),
            ..CompileOptions::default()
        };
        crate::compile(&loaded.files, &options)
    }

    #[test]
    fn declared_clients_per_namespace() {
        let compiled = compile(
            "clients: [unleash, flipper]\nnamespaces:\n  checkout: { clients: [unleash-legacy] }\n",
        );
        assert_eq!(compiled.diagnostics, []);
        let snapshot = compiled.snapshot.unwrap();
        let config = snapshot.config();
        assert!(config.declares("default", "flipper"));
        assert!(!config.declares("default", "unleash-legacy"));
        assert!(config.declares("checkout", "unleash-legacy"));
        assert!(!config.declares("checkout", "unleash"));
        // The config file is no flag file: two flags, and a revision that covers it.
        assert_eq!(snapshot.flag_count(), 2);
        let other = compile("clients: [unleash]\n").snapshot.unwrap();
        assert_ne!(snapshot.revision(), other.revision());
    }

    #[test]
    fn no_declaration_means_every_client() {
        let snapshot = compile("{}\n").snapshot.unwrap();
        assert!(snapshot.config().declares("checkout", "anything"));
        let none = compile("clients: []\n").snapshot.unwrap();
        assert!(!none.config().declares("default", "unleash"));
    }

    /// Every problem is an error at its place, with a suggestion where one is close.
    #[test]
    fn problems_are_diagnostics_at_their_place() {
        let compiled = compile(
            "clients: [unleas, flipper, flipper, zzz]\nnamespaces:\n  checkot: { clients: [unleash] }\n  default: { clinets: [] }\nextra: 1\n",
        );
        assert!(compiled.snapshot.is_none());
        let got: Vec<String> = compiled
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            [
                "vexil.yaml:1:11: error[unknown-client]: unknown client `unleas` in `clients`: did you mean `unleash`?",
                "vexil.yaml:1:28: error[duplicate-key]: client `flipper` is listed twice in `clients`",
                "vexil.yaml:1:37: error[unknown-client]: unknown client `zzz` in `clients`: known clients: flipper, unleash, unleash-legacy",
                "vexil.yaml:3:3: warning[unknown-namespace]: namespace `checkot` in the repository config has no flag file: did you mean `checkout`?",
                "vexil.yaml:4:14: error[unknown-field]: unknown field `clinets` in namespace `default`: did you mean `clients`?",
                "vexil.yaml:5:1: error[unknown-field]: unknown field `extra` in the repository config file: known fields: clients, namespaces",
            ]
        );
    }

    /// A namespace the config names but no flag file defines (its last flag deleted) is a
    /// warning: the revision still compiles.
    #[test]
    fn a_namespace_without_flags_is_a_warning() {
        let compiled = compile("namespaces:\n  gone: { clients: [flipper] }\n");
        assert!(compiled.snapshot.is_some(), "{:?}", compiled.diagnostics);
        let got: Vec<String> = compiled
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            [
                "vexil.yaml:2:3: warning[unknown-namespace]: namespace `gone` in the repository config has no flag file: namespaces: checkout, default"
            ]
        );
    }

    /// A flag's own `clients:` replaces the namespace's and the repository's lists for that
    /// flag (`[]`: no client), and is checked as the config's lists are.
    #[test]
    fn a_flags_clients_replace_the_config_for_that_flag() {
        let flags = "flags:\n  a: { default: true, clients: [flipper] }\n  b: { default: true, clients: [] }\n  c: { default: true }\n";
        let options = CompileOptions {
            clients: Some(KNOWN),
            ..CompileOptions::default()
        };
        let loaded = from_memory([("a.yaml", flags), ("vexil.yaml", "clients: [unleash]\n")]);
        let compiled = crate::compile(&loaded.files, &options);
        assert_eq!(compiled.diagnostics, []);
        let snapshot = compiled.snapshot.unwrap();
        let config = snapshot.config();
        let ns = snapshot.namespace("default").unwrap();
        let declares = |flag: &str, client: &str| {
            config.declares_flag("default", ns.flag(flag).unwrap(), client)
        };
        assert!(declares("a", "flipper"));
        assert!(!declares("a", "unleash"));
        assert!(!declares("b", "flipper"));
        assert!(!declares("b", "unleash"));
        assert!(declares("c", "unleash"));
        assert!(!declares("c", "flipper"));

        let typo = "flags:\n  a:\n    clients: [unleas, flipper, flipper]\n";
        let compiled = crate::compile(&from_memory([("a.yaml", typo)]).files, &options);
        assert!(compiled.snapshot.is_none());
        let got: Vec<String> = compiled
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            [
                "a.yaml:3:15: error[unknown-client]: unknown client `unleas` in `clients` of flag `a`: did you mean `unleash`?",
                "a.yaml:3:32: error[duplicate-key]: client `flipper` is listed twice in `clients` of flag `a`",
            ]
        );
    }

    #[test]
    fn reserved_names_elsewhere_are_errors_not_flags() {
        let loaded = from_memory([
            ("a.yaml", FLAGS),
            ("team/vexil.yaml", FLAGS),
            ("Vexil.yml", FLAGS),
        ]);
        let compiled = crate::compile(&loaded.files, &CompileOptions::default());
        let codes: Vec<(&str, &str)> = compiled
            .diagnostics
            .iter()
            .map(|d| (d.file.as_str(), d.code.as_str()))
            .collect();
        assert_eq!(
            codes,
            [
                ("Vexil.yml", "misplaced-config"),
                ("team/vexil.yaml", "misplaced-config")
            ]
        );
    }
}
