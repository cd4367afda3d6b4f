from bertcls.cli import main

main()
