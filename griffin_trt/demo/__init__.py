"""The embedded demo pair (`target/`, `drafter/`) and the held-out prompts it is evaluated on."""
