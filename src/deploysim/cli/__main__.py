from deploysim.cli.main import main

main()
