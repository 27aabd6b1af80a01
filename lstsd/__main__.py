from lstsd.cli import entry

entry()
