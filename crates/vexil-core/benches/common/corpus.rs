//! The generated flag repository the benchmarks share.

use std::fmt::Write;

/// A generated repository: `flags` flags over `files` files, a mix of every rule shape.
pub fn generated_repository(flags: usize, files: usize) -> Vec<(String, String)> {
    let per_file = flags.div_ceil(files);
    let mut out = Vec::new();
    for f in 0..files {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "segments:\n  seg-{f}:\n    any:\n      - {{ attr: country, in: [DE, FR] }}\n      - {{ attr: email, ends_with: \"@example.com\", ignore_case: true }}\nflags:"
        );
        for i in 0..per_file {
            let n = f * per_file + i;
            if n >= flags {
                break;
            }
            let _ = match n % 5 {
                0 => writeln!(
                    text,
                    "  flag-{n}:\n    description: static flag {n}\n    owner: team-{f}"
                ),
                1 => writeln!(
                    text,
                    "  flag-{n}:\n    rules:\n      - segment: seg-{f}\n        serve: true\n      - rollout: {}",
                    n % 100
                ),
                2 => writeln!(
                    text,
                    "  flag-{n}:\n    type: string\n    variants: {{ a: alpha, b: beta, c: gamma }}\n    default: a\n    rules:\n      - when: [{{ attr: plan, equals: pro }}, {{ attr: seats, gte: 10 }}]\n        serve: b\n      - split: {{ a: 50, b: 25, c: 25 }}"
                ),
                3 => writeln!(
                    text,
                    "  flag-{n}:\n    type: integer\n    variants: {{ low: 10, high: 100 }}\n    default: low\n    rules:\n      - ids: [user-1, user-2, user-3]\n        serve: high\n      - when: [{{ attr: app_version, semver_gte: 2.0.0 }}]\n        serve: high"
                ),
                _ => writeln!(
                    text,
                    "  flag-{n}:\n    rules:\n      - groups: [admins]\n        serve: true\n      - when: [{{ attr: email, matches: \"^[a-z]+@corp\\\\.example$\" }}]\n        serve: true"
                ),
            };
        }
        out.push((format!("team-{f}.yaml"), text));
    }
    out
}
