//! Every admin subcommand has `--help` naming its options.

use crate::common;

#[test]
fn every_admin_command_has_help() {
    let cases: &[(&str, &[&str])] = &[
        ("stats", &["--json", "--scan", "--beanstalkd"]),
        (
            "failed",
            &["--code", "--domain", "--host", "--since", "--json"],
        ),
        ("requeue", &["--dry-run", "--code", "--domain", "--since"]),
        ("show", &["<ID>", "--json"]),
        ("purge", &["--yes", "--code"]),
        ("hold", &["[HOST]"]),
        ("release", &["<HOST>", "--settle"]),
    ];
    for (command, options) in cases {
        let (ok, out, err) = common::admin(&[command, "--help"]);
        assert!(ok, "{command}: {err}");
        for option in *options {
            assert!(
                out.contains(option),
                "{command} --help lacks {option}:\n{out}"
            );
        }
    }
}
