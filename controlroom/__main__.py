from controlroom.cli import main

main()
