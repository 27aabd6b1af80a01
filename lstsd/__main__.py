from lstsd.cli import main

main()
