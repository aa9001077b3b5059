"""`python -m maildesk` is the `maildesk` command."""
from .cli.main import main

main()
