//! Shell completions and man pages, generated from the clap definitions so
//! they can never disagree with `--help` (packagers run these at build
//! time; see the README's install section).

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};

/// `coffer completions SHELL`: the script on standard output.
pub fn completions(args: &CompletionsArgs) -> Result<()> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, "coffer", &mut out);
    crate::say!("{}", String::from_utf8_lossy(&out).trim_end());
    Ok(())
}

/// `coffer man --out DIR`: `coffer.1`, and `coffer-SUB.1` (and
/// `coffer-SUB-SUBSUB.1`) for every subcommand.
pub fn man(args: &ManArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut command = Cli::command();
    command.build();
    let written = write_pages(&command, "coffer", &args.out)?;
    eprintln!("wrote {written} man pages to {}", args.out.display());
    Ok(())
}

fn write_pages(command: &clap::Command, name: &str, dir: &Path) -> Result<usize> {
    let mut text = Vec::new();
    clap_mangen::Man::new(command.clone())
        .title(name.to_uppercase())
        .render(&mut text)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    let mut written = 1;
    for sub in command.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        written += write_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(written)
}
