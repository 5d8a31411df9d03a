from lpfs.daemon.nsfs import main

main()
