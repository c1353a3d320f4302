from examples.subscriber.subscriber import main

main()
