from lpfs.tools.shims import main

main()
