//! `skiff-runtime`: a runc-compatible command line over the skiff_runtime library.

mod cli;
mod commands;
mod wait;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    if cli.command.needs_protected_binary() {
        // Before anything else (threads, state): a failure here leaves nothing behind.
        if let Err(e) = skiff_runtime::exeseal::ensure() {
            eprintln!("skiff-runtime: protect the runtime binary from containers: {e}");
            std::process::exit(1);
        }
    }
    let format = match cli.log_format.as_str() {
        "json" => skiff_runtime::log::Format::Json,
        _ => skiff_runtime::log::Format::Text,
    };
    skiff_runtime::log::init(cli.log.clone(), format, cli.debug);
    let code = match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{e:#}");
            if skiff_runtime::log::to_stderr() {
                eprintln!("skiff-runtime: {msg}");
            } else {
                skiff_runtime::log::error(&msg);
                eprintln!("skiff-runtime: {msg}");
            }
            1
        }
    };
    std::process::exit(code);
}
