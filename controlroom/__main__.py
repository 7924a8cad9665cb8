from controlroom.cli.main import main

main()
