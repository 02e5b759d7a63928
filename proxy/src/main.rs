fn main() {
    eprintln!("llmtrace-proxy: not built yet");
    std::process::exit(2)
}
