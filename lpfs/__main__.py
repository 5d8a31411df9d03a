from lpfs.tools.cli import main

main()
